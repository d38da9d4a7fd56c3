"""`aesthetic`: the LAION aesthetic predictor (the DEFT paper's Aesthetic column): a linear head on the
L2-normalised CLIP ViT-L/14 image embedding of the prediction, predicting a 1-10 rating.

Weights: `--aesthetic-model FILE.safetensors`, converted once from LAION's published state dict, e.g.
`sac+logos+ava1-l14-linearMSE.pth` of christophschuhmann/improved-aesthetic-predictor (keys `layers.{0,2,4,6,7}`:
Linear 768-1024-128-64-16-1 with dropouts between and no activation) or `sa_0_4_vit_l_14_linear.pth` of
LAION-AI/aesthetic-predictor (one Linear 768-1, keys `weight`, `bias`). The chain of linear layers is rebuilt from the
file's shapes. CLIP: `--aesthetic-clip-model` (default `openai/clip-vit-large-patch14`).
"""

from __future__ import annotations

import re

import torch
from torch import nn

from omnideft.errors import UserError
from omnideft.eval.metrics.base import MetricBatch, PairMetric
from omnideft.eval.metrics.clip import ClipEncoder
from omnideft.eval.metrics.weights import read_weights

LAYER_RE = re.compile(r"layers\.(\d+)\.weight")


def build_head(state: dict[str, torch.Tensor], path: str) -> nn.Module:
    """The linear chain stored in `state`: `weight`/`bias` (one layer) or `layers.K.weight`/`.bias` (Sequential;
    the indices between linear layers are dropouts, identities at inference)."""
    if set(state) == {"weight", "bias"}:
        head = nn.Linear(state["weight"].shape[1], state["weight"].shape[0])
        head.load_state_dict(state)
        return head
    indices = sorted(int(m.group(1)) for k in state if (m := LAYER_RE.fullmatch(k)))
    if not indices:
        raise UserError(f"--aesthetic-model {path}: expected LAION aesthetic weights (keys layers.K.weight or "
                        f"weight/bias), found {sorted(state)[:4]}")
    layers = [nn.Identity() for _ in range(indices[-1] + 1)]
    for k in indices:
        w = state[f"layers.{k}.weight"]
        layers[k] = nn.Linear(w.shape[1], w.shape[0])
    head = nn.Sequential(*layers)
    try:
        head.load_state_dict({k.removeprefix("layers."): v for k, v in state.items()})
    except RuntimeError as exc:
        raise UserError(f"--aesthetic-model {path}: {str(exc).splitlines()[0]}") from None
    return head


class Aesthetic(PairMetric):
    name = "aesthetic"
    settings = ("aesthetic_model", "aesthetic_clip_model")
    higher_is_better = True
    summary = "LAION aesthetic MLP on normalised CLIP ViT-L/14 image embeddings (1-10)"

    def __init__(self, options):
        super().__init__(options)
        path = options.aesthetic_model
        self.head = build_head(read_weights(path, "--aesthetic-model"), path).float().eval().to(options.device)
        self.encoder = ClipEncoder(options.aesthetic_clip_model, "--aesthetic-clip-model", options.device,
                                   tokenizer=False)
        dim, want = self.encoder.model.config.projection_dim, next(self.head.parameters()).shape[1]
        if dim != want:
            raise UserError(f"--aesthetic-model {path} expects {want}-d CLIP embeddings but --aesthetic-clip-model "
                            f"{options.aesthetic_clip_model} gives {dim}-d (use CLIP ViT-L/14)")

    @torch.no_grad()
    def score(self, batch: MetricBatch) -> list[float]:
        return self.head(self.encoder.images(batch.pred)).squeeze(-1).tolist()
