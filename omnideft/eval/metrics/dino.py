"""`dino_v1` and `dino_v2`: cosine similarity of the CLS embeddings of self-supervised ViTs, prediction vs reference
(the DreamBench DINO score). dino_v1: transformers `ViTModel` with `facebook/dino-vits8` (the DEFT evaluation's
`dino_vits8`, which it fetched through torch.hub at run time; `--dino-model`). dino_v2: `Dinov2Model` with
`facebook/dinov2-small` (`--dinov2-model`). Both use the layer-normed CLS token of the last layer."""

from __future__ import annotations

import torch

from omnideft.eval.metrics.base import MetricBatch, PairMetric
from omnideft.eval.metrics.hub import load_model


class DinoEncoder:
    def __init__(self, model_class: str, name: str, flag: str, device: str, model_type: str):
        # DINO v1 checkpoints have no pooler (only the CLS token is used): do not build a random one
        kwargs = (("add_pooling_layer", False),) if model_class == "ViTModel" else ()
        self.model, self.processor, _ = load_model(model_class, name, flag, device, (model_type,),
                                                   model_kwargs=kwargs)
        self.device = device

    @torch.no_grad()
    def images(self, images) -> torch.Tensor:
        """L2-normalised CLS embeddings, float32, N x D."""
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        cls = self.model(pixel_values=pixels.to(self.device)).last_hidden_state[:, 0].float()
        return torch.nn.functional.normalize(cls, dim=-1)


class _DinoSimilarity(PairMetric):
    higher_is_better = True
    needs = ("ref",)
    encoder: DinoEncoder

    def score(self, batch: MetricBatch) -> list[float]:
        return (self.encoder.images(batch.pred) * self.encoder.images(batch.ref)).sum(-1).tolist()


class DinoV1(_DinoSimilarity):
    name = "dino_v1"
    settings = ("dino_model",)
    summary = "cos(DINO ViT-S/8 CLS(pred), CLS(ref))"

    def __init__(self, options):
        super().__init__(options)
        self.encoder = DinoEncoder("ViTModel", options.dino_model, "--dino-model", options.device, "vit")


class DinoV2(_DinoSimilarity):
    name = "dino_v2"
    settings = ("dinov2_model",)
    summary = "cos(DINOv2-small CLS(pred), CLS(ref))"

    def __init__(self, options):
        super().__init__(options)
        self.encoder = DinoEncoder("Dinov2Model", options.dinov2_model, "--dinov2-model", options.device, "dinov2")
