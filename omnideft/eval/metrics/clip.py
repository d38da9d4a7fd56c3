"""`clip_i` and `clip_t`: cosine similarities in CLIP's joint embedding space (transformers `CLIPModel`, default
`openai/clip-vit-base-patch32` as the DEFT/DreamBench evaluation; `--clip-model` hub id or local folder).

clip_i = cos(E_img(pred), E_img(ref)); clip_t = cos(E_img(pred), E_txt(prompt)). Raw cosines in [-1, 1] (identical
images give 1); torchmetrics' `CLIPScore` reports 100·max(cos, 0) averaged over a batch, so multiply by 100 to
compare with tables in that convention. Prompts lose their `<img><|image_k|></img>` placeholders and are truncated
to CLIP's 77 tokens (the DEFT code keeps only the first sentence; in-context instructions start with layout text).
"""

from __future__ import annotations

import re

import torch

from omnideft.eval.metrics.base import MetricBatch, PairMetric
from omnideft.eval.metrics.hub import load_model

PLACEHOLDER_RE = re.compile(r"<img>\s*<\|image_\d+\|>\s*</img>|<\|image_\d+\|>")


def clean_prompt(text: str) -> str:
    return re.sub(r"\s+", " ", PLACEHOLDER_RE.sub(" ", text)).strip()


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is the projected embedding; 4.x returns the tensor
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class ClipEncoder:
    def __init__(self, name: str, flag: str, device: str, tokenizer: bool = True):
        self.model, self.processor, self.tokenizer = load_model("CLIPModel", name, flag, device, ("clip",),
                                                                tokenizer)
        self.device = device

    @torch.no_grad()
    def images(self, images) -> torch.Tensor:
        """L2-normalised image embeddings, float32, N x D."""
        pixels = self.processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
        emb = _features(self.model.get_image_features(pixel_values=pixels.to(self.device))).float()
        return torch.nn.functional.normalize(emb, dim=-1)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        limit = min(self.tokenizer.model_max_length, self.model.config.text_config.max_position_embeddings)
        tok = self.tokenizer([clean_prompt(t) for t in texts], padding=True, truncation=True, max_length=limit,
                             return_tensors="pt")
        emb = _features(self.model.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                     attention_mask=tok["attention_mask"].to(self.device))).float()
        return torch.nn.functional.normalize(emb, dim=-1)


class ClipImage(PairMetric):
    name = "clip_i"
    settings = ("clip_model",)
    higher_is_better = True
    needs = ("ref",)
    summary = "cos(CLIP_img(pred), CLIP_img(ref))"

    def __init__(self, options):
        super().__init__(options)
        self.encoder = ClipEncoder(options.clip_model, "--clip-model", options.device)

    def score(self, batch: MetricBatch) -> list[float]:
        return (self.encoder.images(batch.pred) * self.encoder.images(batch.ref)).sum(-1).tolist()


class ClipText(PairMetric):
    name = "clip_t"
    settings = ("clip_model",)
    higher_is_better = True
    needs = ("prompt",)
    summary = "cos(CLIP_img(pred), CLIP_txt(prompt))"

    def __init__(self, options):
        super().__init__(options)
        self.encoder = ClipEncoder(options.clip_model, "--clip-model", options.device)

    def score(self, batch: MetricBatch) -> list[float]:
        return (self.encoder.images(batch.pred) * self.encoder.texts(batch.prompt)).sum(-1).tolist()
