"""What the planner knows about a model without its weights: the transformer's and VAE's configs (shipped for the
real OmniGen, read from a local diffusers folder, or built for `tiny`/`small`) and the sizes that follow from them,
counted on the meta device (no memory, well under a second for the 3.8B model): parameters by kind, the adapted
linears and the adapter's parameters."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from omnideft.errors import UserError
from omnideft.model.loading import DEFAULT_MODEL_ID
from omnideft.model.presets import TINY
from omnideft.model.small import SMALL, small_model_dir

SHIPPED_CONFIGS = {DEFAULT_MODEL_ID: "omnigen-v1-diffusers.json"}


@dataclass(frozen=True)
class ModelShapes:
    hidden: int
    intermediate: int
    heads: int
    layers: int
    linear_params: int  # weights of the nn.Linear layers (what int8/fp8/nf4 quantise)
    other_params: int  # embeddings, norms, patch embeddings, biases
    buffers: int  # the fixed 2-D sin-cos position table
    adapter_params: int
    adapted: tuple[tuple[int, int], ...]  # (in_features, out_features) of each adapted linear
    vae_params: int
    method: str  # the adapter method (its per-token activations depend on it)
    # Set by families other than OmniGen v1 (plan/families.py):
    kv_heads: int = 0  # grouped-query key/value heads (0: as many as heads)
    refiner_layers: int = 0  # blocks that refine each part of the sequence before `layers` (OmniGen2)
    # Linear weights whose input carries gradients (what autocast's kept weight casts cover): in the blocks, and
    # outside them (embedders after the first layer, output projection)
    block_linear_params: int = 0
    outside_linear_params: int = 0
    block_adapted: tuple[tuple[int, int], ...] = ()  # the adapted linears of one block, when not adapted[:per layer]
    prompt_encoder_params: int = 0  # a separate frozen prompt encoder (OmniGen2's MLLM)
    prompt_encoder_bytes_per_token: int = 0  # what its no-grad forward holds per text token (hidden states, logits)
    source: str = ""  # where the configs came from, when not the model name itself
    activations: object = None  # the family's activation model (estimate.OmniGenActivations' interface); None: v1

    @property
    def base_params(self) -> int:
        return self.linear_params + self.other_params

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def adapted_per_layer(self) -> int:
        return len(self.adapted) // self.layers


def model_configs(name: str) -> tuple[dict, dict]:
    """(transformer config, VAE config) of a model name as the recipe's `model.name` spells it."""
    if name in SHIPPED_CONFIGS:
        raw = json.loads(files("omnideft.plan").joinpath("configs", SHIPPED_CONFIGS[name]).read_text())
        return raw["transformer"], raw["vae"]
    if name == TINY:
        from omnideft.model.tiny import tiny_transformer_config, tiny_vae_config

        return tiny_transformer_config(), tiny_vae_config()
    folder = small_model_dir() if name == SMALL else Path(name)
    configs = [folder / "transformer" / "config.json", folder / "vae" / "config.json"]
    if not all(c.is_file() for c in configs):
        raise UserError(f"plan: no config for model {name!r}: give a local diffusers folder (transformer/config.json, "
                        f"vae/config.json), 'tiny', 'small' or one of {', '.join(SHIPPED_CONFIGS)}")
    return tuple(json.loads(c.read_text()) for c in configs)


def measure_shapes(transformer_config: dict, vae_config: dict, spec) -> ModelShapes:
    """Build the transformer and VAE on the meta device, inject the adapter `spec`, and count."""
    import torch
    from diffusers import AutoencoderKL, OmniGenTransformer2DModel

    from omnideft.adapters import apply_adapter
    from omnideft.families.omnigen.targets import target_modules

    with torch.device("meta"):
        transformer = OmniGenTransformer2DModel.from_config(transformer_config)
        vae = AutoencoderKL.from_config(vae_config)
        transformer.requires_grad_(False)
        linear, other, buffers = count_linears(transformer)
        model = apply_adapter(transformer, spec, targets=target_modules)
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapted = tuple((m.in_features, m.out_features) for m in adapted_linears(model))
    cfg = transformer.config
    return ModelShapes(cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_layers, linear,
                       other, buffers, adapter, adapted, sum(p.numel() for p in vae.parameters()), spec.method)


def count_linears(transformer) -> tuple[int, int, int]:
    """(nn.Linear weights, other parameters, buffers) of a transformer, in values."""
    from torch import nn

    linear_weights = {id(m.weight) for m in transformer.modules() if isinstance(m, nn.Linear)}
    params = list(transformer.parameters())
    linear = sum(p.numel() for p in params if id(p) in linear_weights)
    return linear, sum(p.numel() for p in params) - linear, sum(b.numel() for b in transformer.buffers())


def adapted_linears(model):
    """The base linears that carry an adapter: modules with a `base_layer` (PEFT) or an `omnideft_base` (own
    injection) whose weight is frozen and whose children hold trainable parameters."""
    from torch import nn

    out = []
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, nn.Linear) and any(p.requires_grad for p in module.parameters()):
            out.append(base)
    return out
