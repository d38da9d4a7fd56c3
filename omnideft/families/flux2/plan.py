"""FLUX.2 [klein] for the planner: its component configs (the published klein-base-4B's ship in
configs/flux2_klein_base_4b.json: the transformer as diffusers' conversion script builds klein 4B, the Qwen3-4B text
encoder, the FLUX.2 VAE), their sizes counted on the meta device with diffusers' and transformers' own classes, and
an activation model.

The activation model is an estimate from the block structure, not yet held to a CPU measurement as OmniGen (v1)'s
and OmniGen2's are. Per token of a block, in hidden-size values (H; the SwiGLU's inner size is 3H): a double-stream
block keeps, per stream, the modulated norm inputs (2 H), q, k, v and the attention output (4 H), the output
projection's input (H), the feed-forward's input (H), its gate and up projections (6 H) and the SwiGLU product (3 H)
- 17 H - at compute bytes; a single-stream block its modulated input (H), the fused q/k/v/MLP projection (9 H), the
attention output and SwiGLU product (4 H, the output projection's input) - 14 H. Each adapted linear adds its rank-r
projection (fp32). Text tokens run through every block beside the image tokens (the pipeline pads the prompt to 512).
With gradient checkpointing only each block's input (H at stream bytes) stays. The pipeline pads every prompt to 512
tokens, in training too: plan klein with `omnideft plan RECIPE --text-tokens 512` (the command's default is 128).
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from omnideft.errors import UserError
from omnideft.families.flux2.batch import MAX_PIXELS
from omnideft.families.flux2.targets import target_modules
from omnideft.model.presets import TINY
from omnideft.sizing.estimate import DTYPE_BYTES, Activations, Setup, Workload
from omnideft.sizing.shapes import ModelShapes, PlanFamily, adapted_linears, count_linears

PUBLISHED_ID = "black-forest-labs/FLUX.2-klein-base-4B"  # the model whose configs ship in configs/
CONFIG_FILE = "flux2_klein_base_4b.json"
COMPONENTS = ("transformer", "text_encoder", "vae")


def plan_entry() -> PlanFamily:
    return PlanFamily("flux2", flux2_configs, flux2_shapes,
                      workload={"time_tokens": 0, "input_pixels": (MAX_PIXELS,)},
                      trainer_refuses=("model.quantize", "data.latents"))


def flux2_configs(name: str) -> tuple[dict, str]:
    """({"transformer", "text_encoder", "vae"} configs, where they came from) for `model.name`: 'tiny', a local
    diffusers folder, or - the published id or anything not on disk - the shipped klein-base-4B configs."""
    if name == TINY:
        from omnideft.families.flux2.model import (
            build_tiny_tokenizer,
            tiny_text_encoder_config,
            tiny_transformer_config,
            tiny_vae_config,
        )

        text = tiny_text_encoder_config(len(build_tiny_tokenizer())).to_dict()
        return {"transformer": tiny_transformer_config(), "text_encoder": text, "vae": tiny_vae_config()}, ""
    folder = Path(name).expanduser()
    if folder.is_dir():
        paths = {part: folder / part / "config.json" for part in COMPONENTS}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise UserError(f"plan: {name} is not a complete FLUX.2 [klein] folder: no {', '.join(missing)}")
        try:
            return {part: json.loads(p.read_text()) for part, p in paths.items()}, ""
        except json.JSONDecodeError as exc:
            raise UserError(f"plan: a config of {name} is not JSON: {exc}") from None
    shipped = json.loads(files("omnideft.families.flux2").joinpath("configs", CONFIG_FILE).read_text())
    shipped = {part: shipped[part] for part in COMPONENTS}
    return shipped, ("" if name == PUBLISHED_ID else f"{name} not found: the published {PUBLISHED_ID} configs "
                     "shipped in omnideft/families/flux2/configs/")


def _config(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def flux2_shapes(configs: dict, spec) -> ModelShapes:
    """Build the transformer, text encoder and VAE on the meta device, inject the adapter `spec` into the
    transformer, and count (the text encoder's tied embedding counts once, as transformers ties it)."""
    import torch
    from diffusers import AutoencoderKLFlux2, Flux2Transformer2DModel
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from omnideft.adapters import apply_adapter

    with torch.device("meta"):
        transformer = Flux2Transformer2DModel.from_config(_config(configs["transformer"]))
        text_config = Qwen3Config(**_config(configs["text_encoder"]))
        text_encoder = Qwen3ForCausalLM(text_config)
        vae = AutoencoderKLFlux2.from_config(_config(configs["vae"]))
        transformer.requires_grad_(False)
        linear, other, buffers = count_linears(transformer)
        blocks = sum(count_linears(stack)[0] for stack in (transformer.transformer_blocks,
                                                           transformer.single_transformer_blocks))
        # the linears fed by the data (image and text tokens, the timestep's sinusoid) keep no weight cast
        fed = sum(count_linears(m)[0] for m in (transformer.x_embedder, transformer.context_embedder,
                                                transformer.time_guidance_embed.timestep_embedder.linear_1))
        model = apply_adapter(transformer, spec, targets=target_modules)
    adapted = adapted_linears(model)
    cfg = transformer.config
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    return ModelShapes(
        hidden=hidden, intermediate=int(hidden * cfg.mlp_ratio), heads=cfg.num_attention_heads,
        layers=cfg.num_layers + cfg.num_single_layers, linear_params=linear, other_params=other, buffers=buffers,
        adapter_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        adapted=tuple((m.in_features, m.out_features) for m in adapted),
        vae_params=sum(p.numel() for p in vae.parameters()), method=spec.method,
        block_linear_params=blocks, outside_linear_params=linear - blocks - fed,
        prompt_encoder_params=sum(p.numel() for p in text_encoder.parameters()),
        # its no-grad forward returns every layer's hidden states and the logits (the text encoder's dtype)
        prompt_encoder_bytes_per_token=4 * ((text_config.num_hidden_layers + 1) * text_config.hidden_size
                                            + text_config.vocab_size),
        activations=FLUX2_ACTIVATIONS)


class Flux2Activations(Activations):
    """klein's activation model (the module docstring): an estimate, not a measured model."""

    def block(self, shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
        """Bytes one block (the mean of the double- and single-stream blocks, weighted by their counts' typical
        ratio 1:4) keeps for `tokens` rows."""
        c = DTYPE_BYTES[setup.compute]
        per_token = c * 15 * shapes.hidden + 4 * rank * max(shapes.adapted_per_layer, 1)
        return per_token * tokens

    def saved(self, shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int | None = None,
              output_tokens: int | None = None) -> float:
        tokens = work.batch * (seq_len or work.seq_len)
        once = tokens * shapes.hidden * (2 * setup.stream_bytes + DTYPE_BYTES[setup.compute])  # norm_out, proj_out
        kept = shapes.outside_linear_params + (0 if setup.checkpointing else shapes.block_linear_params)
        casts = kept * DTYPE_BYTES[setup.compute] if setup.stream_bytes > DTYPE_BYTES[setup.compute] else 0
        if setup.checkpointing:
            return shapes.layers * tokens * shapes.hidden * setup.stream_bytes + once + casts
        return shapes.layers * self.block(shapes, setup, rank, tokens) + once + casts

    def batch(self, work: Workload) -> tuple[float, str]:
        pixels = 3 * 4 * (work.image_size ** 2 + work.input_images * work.input_size ** 2)
        return work.batch * pixels, "pixels, fp32"


FLUX2_ACTIVATIONS = Flux2Activations()
