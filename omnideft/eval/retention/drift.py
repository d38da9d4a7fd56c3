"""Drift: how far an adapted model's answers moved from the base's, exactly as PEFT's image-generation method
benchmark measures forgetting.

Source: huggingface/peft, method_comparison/image-gen/run.py `measure_drift` and utils.py `get_dino_encoder` /
`get_dino_embeddings`, at commit 1159d5aace768abfbb97842e691e290beeaa3bab (the last to touch either file):

  - encoder: `AutoModel.from_pretrained(dino_model_id)` (facebook/dinov2-small), eval mode, and the same id's
    `AutoImageProcessor` with its defaults (DINOv2's: shortest edge 256, centre crop 224, ImageNet mean/std);
  - embedding: `model(**processor(images)).last_hidden_state[:, 0]`, the CLS token of the last layer after DINOv2's
    final layernorm (not `pooler_output`), L2-normalised;
  - per prompt: cos = <e(adapted image), e(base image)> of the two images of the same prompt and noise seed;
  - drift = (1 - mean over the prompts of cos) / 2, so 0 = the same images, 1 = opposite embeddings.

The encoder is `omnideft eval`'s dino_v2 (eval/metrics/dino.py DinoEncoder, loaded by eval/metrics/hub.py as
`--dinov2-model` is): the same class, processor and CLS token. One difference of sampling, not of the measure: PEFT
draws all base images from one generator seeded once (then all adapted images from the same), the gauge seeds each
(probe, seed) render on its own, so a probe's image does not depend on its place in the list.
"""

from __future__ import annotations

import torch

from omnideft.eval.metrics.dino import DinoEncoder

PEFT_SOURCE = {"repository": "huggingface/peft",
               "files": ["method_comparison/image-gen/run.py (measure_drift)",
                         "method_comparison/image-gen/utils.py (get_dino_encoder, get_dino_embeddings)"],
               "commit": "1159d5aace768abfbb97842e691e290beeaa3bab"}
DEFINITION = ("drift = (1 - mean_i cos(DINOv2 CLS(base_i), DINOv2 CLS(adapted_i))) / 2, CLS = last_hidden_state[:, 0] "
              "after the final layernorm, L2-normalised, the model's own image processor")


def load_encoder(name: str, device: str = "cpu", flag: str = "retention.dinov2_model") -> DinoEncoder:
    """DINOv2 from a local folder or a cached hub id, loaded as `omnideft eval --dinov2-model` loads it; a folder
    that is not a DINOv2 model is one line naming `flag` (the recipe key, or the caller's command-line flag)."""
    return DinoEncoder("Dinov2Model", name, flag, device, "dinov2")


def cosines(base: torch.Tensor, adapted: torch.Tensor) -> torch.Tensor:
    """Per pair: the cosine of two L2-normalised embeddings [N, D] (PEFT: `(a * b).sum(dim=-1)`)."""
    return (adapted * base).sum(dim=-1)


def drift(base: torch.Tensor, adapted: torch.Tensor) -> float:
    """PEFT's drift of N image pairs: (1 - mean cosine) / 2."""
    return (1 - cosines(base, adapted).mean().item()) / 2.0
