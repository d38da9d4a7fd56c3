"""Tiny randomly initialised metric models (CLIP, DINO ViT, DINOv2, DPT depth, LAION aesthetic head, FID Inception)
saved in the layouts the metrics load from disk: no downloads, milliseconds per forward."""

from __future__ import annotations

from pathlib import Path

import torch

SIZE = 32  # processor output size of every tiny model
VIT = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=SIZE,
           patch_size=8)


def _processor(kind: str):
    from transformers import CLIPImageProcessor, DPTImageProcessor, ViTImageProcessor

    if kind == "clip":
        return CLIPImageProcessor(size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE})
    if kind == "dpt":
        return DPTImageProcessor(size={"height": SIZE, "width": SIZE}, keep_aspect_ratio=False)
    return ViTImageProcessor(size={"height": SIZE, "width": SIZE})


WORDS = ["<unk>", "<s>", "</s>", "a", "photo", "of", "red", "blue", "cup", "dog", "cat", "in", "the", "on", "jungle",
         "beach", "sks", "backpack", "wearing", "hat", "sleeping"]


def tiny_text_tokenizer():
    """A word-level tokenizer with BOS (the tiny CLIP's text side); lighter to build than the OmniGen one."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(vocab={w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[("<s>", 1), ("</s>", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>", model_max_length=77)


def save_clip(folder: Path, seed: int = 0, projection_dim: int = 8) -> Path:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(text_config=dict(vocab_size=len(WORDS), hidden_size=16, intermediate_size=32,
                                         num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=77,
                                         bos_token_id=1, eos_token_id=2, pad_token_id=2),
                        vision_config=VIT, projection_dim=projection_dim)
    CLIPModel(config).save_pretrained(folder)
    tiny_text_tokenizer().save_pretrained(folder)
    _processor("clip").save_pretrained(folder)
    return folder


def save_dino(folder: Path, seed: int = 1) -> Path:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(seed)
    ViTModel(ViTConfig(**VIT), add_pooling_layer=False).save_pretrained(folder)
    _processor("vit").save_pretrained(folder)
    return folder


def save_dinov2(folder: Path, seed: int = 2) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(**VIT)).save_pretrained(folder)
    _processor("vit").save_pretrained(folder)
    return folder


def save_depth(folder: Path, seed: int = 3) -> Path:
    from transformers import DPTConfig, DPTForDepthEstimation

    torch.manual_seed(seed)
    config = DPTConfig(**{**VIT, "num_hidden_layers": 4}, backbone_out_indices=[0, 1, 2, 3],
                       neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8, reassemble_factors=[4, 2, 1, 0.5])
    DPTForDepthEstimation(config).save_pretrained(folder)
    _processor("dpt").save_pretrained(folder)
    return folder


def save_aesthetic(path: Path, dim: int = 8, seed: int = 4) -> Path:
    """The improved-aesthetic-predictor layout (layers.0/2/4/6/7), shrunk: dim-16-8-4-2-1."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    sizes = [dim, 16, 8, 4, 2, 1]
    state = {}
    for k, (i, o) in zip((0, 2, 4, 6, 7), zip(sizes, sizes[1:])):
        state[f"layers.{k}.weight"] = torch.randn(o, i, generator=g)
        state[f"layers.{k}.bias"] = torch.randn(o, generator=g)
    save_file(state, str(path))
    return path


def save_inception(path: Path, seed: int = 5) -> Path:
    from safetensors.torch import save_file

    from omnideft.eval.metrics.inception import FIDInceptionV3

    torch.manual_seed(seed)
    save_file(FIDInceptionV3().state_dict(), str(path))
    return path


def save_all(root: Path) -> dict[str, Path]:
    return {"clip": save_clip(root / "clip"), "dino": save_dino(root / "dino"), "dinov2": save_dinov2(root / "dinov2"),
            "depth": save_depth(root / "depth"), "aesthetic": save_aesthetic(root / "aesthetic.safetensors")}


def metric_flags(models: dict[str, Path]) -> list[str]:
    """CLI flags pointing every metric at the tiny models."""
    return ["--clip-model", str(models["clip"]), "--dino-model", str(models["dino"]), "--dinov2-model",
            str(models["dinov2"]), "--depth-model", str(models["depth"]), "--aesthetic-model",
            str(models["aesthetic"]), "--aesthetic-clip-model", str(models["clip"]), "--fid-features", "dinov2",
            "--device", "cpu", "--no-progress"]
