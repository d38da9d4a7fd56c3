"""`depth_rmse`: controllability of depth-conditioned generation. A transformers depth model
(`AutoModelForDepthEstimation`: Depth Anything, DPT, ...; default `depth-anything/Depth-Anything-V2-Small-hf`,
`--depth-model`) predicts relative depth on the generated image; it is resized (bicubic) to the condition's size and
compared with the condition depth map (`--cond`, channel mean), or without a condition with the model's prediction
on the reference. Relative depth has no fixed scale or offset, so each map is min-max normalised to [0, 1] first;
depth_rmse = 255 · sqrt(mean((n(pred_depth) - n(cond_depth))^2)), in 8-bit grey levels as ControlNet++ reports it.
"""

from __future__ import annotations

import torch

from omnideft.eval.metrics.base import MetricBatch, PairMetric, gray, to_float_array
from omnideft.eval.metrics.hub import load_model


def min_max(x: torch.Tensor) -> torch.Tensor:
    """Per map (last two dims) to [0, 1]; a constant map becomes 0."""
    lo = x.amin(dim=(-2, -1), keepdim=True)
    span = x.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), torch.zeros_like(x))


class DepthRmse(PairMetric):
    name = "depth_rmse"
    settings = ("depth_model",)
    higher_is_better = False
    needs = ("cond",)
    summary = "255 * RMSE of min-max normalised depth(pred) vs the condition depth map (or depth(ref))"

    def __init__(self, options):
        super().__init__(options)
        self.model, self.processor, _ = load_model("AutoModelForDepthEstimation", options.depth_model,
                                                   "--depth-model", options.device, ())

    @torch.no_grad()
    def depth(self, images, sizes: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Predicted depth per image, resized to sizes[i] = (width, height), float64 H x W. Images of one size
        share a forward (some processors keep the aspect ratio, so sizes cannot always be stacked)."""
        out: list[torch.Tensor | None] = [None] * len(images)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(im.size, []).append(i)
        for idx in groups.values():
            pixels = self.processor(images=[images[i].convert("RGB") for i in idx], return_tensors="pt")
            pred = self.model(pixel_values=pixels["pixel_values"].to(self.model.device)).predicted_depth
            for k, i in enumerate(idx):
                w, h = sizes[i]
                out[i] = torch.nn.functional.interpolate(pred[k][None, None].float(), size=(h, w), mode="bicubic",
                                                         align_corners=False)[0, 0].double().cpu()
        return out

    def score(self, batch: MetricBatch) -> list[float]:
        sizes = [(c if c is not None else r).size for c, r in zip(batch.cond, batch.ref)]
        pred_depth = self.depth(batch.pred, sizes)
        no_cond = [i for i, c in enumerate(batch.cond) if c is None]
        ref_depth = dict(zip(no_cond, self.depth([batch.ref[i] for i in no_cond], [sizes[i] for i in no_cond])))
        values = []
        for i, cond in enumerate(batch.cond):
            target = ref_depth[i] if cond is None else torch.from_numpy(gray(to_float_array(cond)))
            diff = min_max(pred_depth[i]) - min_max(target)
            values.append(float(255.0 * diff.pow(2).mean().sqrt()))
        return values
