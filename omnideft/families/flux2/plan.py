"""FLUX.2 [klein] for the planner: its component configs (the published klein-base-4B's ship in
configs/flux2_klein_base_4b.json: the transformer as diffusers' conversion script builds klein 4B, the Qwen3-4B text
encoder, the FLUX.2 VAE), their sizes counted on the meta device with diffusers' and transformers' own classes, and
the activation model, held to what a step of diffusers' Flux2Transformer2DModel really keeps (measure_flux2_step,
tests/test_flux2.py).

The activation model is measured on width-reduced klein transformers (H = 64, 96 and 192 give the same numbers per
hidden value, so they scale with width), in bytes per hidden value (H) per token that passes a block, with every
linear adapted and more rows than any adapted linear has input features:

    block          fp32                    bf16 base, or fp32 base under bf16 autocast
    double-stream  104.6 H                 56.5 H (DEFT, PaRa: the fused layer), 61.9 H (LoRA and the others)
    single-stream   92.5 H                 54.4 H

plus, per adapted linear and row it sees, the rank-r projection in fp32 and, for the fused DEFT layer with fewer rows
than input features, its base output (estimate.FUSED_DEFT's rule; a double-stream block's image and text streams are
separate calls). Once per step: every token's RoPE rotation (2 x head_dim fp32), norm_out's and proj_out's inputs
(3 H per image token), the patch and text embedders' inputs when they are adapted; an fp32 base under autocast keeps
each cast weight of a linear whose input carries gradients (outside the blocks: the timestep path's only when an
adapter sits on it). The residual stream is in the compute dtype (x_embedder's autocast output starts it). With
gradient checkpointing only each block's input (H) stays. Held to measurement within 10 % for `all-linear` (the
default) with LoRA and DEFT in fp32, bf16, fp32 under autocast, checkpointed (tests/test_flux2.py); with fewer targets
(`attn`) the per-H numbers overestimate the saved activations (measured +18 to +29 %, +47 to +59 % checkpointed, where
they are small: the step's total within 20 %). Text tokens pass every block like image tokens; the pipeline pads the
prompt to 512 tokens, in training too, so the plan's default text length for klein is 512 (TEXT_TOKENS).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from omnideft.errors import UserError
from omnideft.families.flux2.batch import MAX_PIXELS
from omnideft.families.flux2.targets import target_modules
from omnideft.model.presets import TINY
from omnideft.sizing.estimate import DTYPE_BYTES, FUSED_DEFT, Activations, Setup, Workload
from omnideft.sizing.shapes import ModelShapes, PlanFamily, adapted_linears, count_linears

PUBLISHED_ID = "black-forest-labs/FLUX.2-klein-base-4B"  # the model whose configs ship in configs/
CONFIG_FILE = "flux2_klein_base_4b.json"
COMPONENTS = ("transformer", "text_encoder", "vae")
TEXT_TOKENS = 512  # Flux2KleinPipeline pads every prompt to max_sequence_length=512, in training too


def plan_entry() -> PlanFamily:
    return PlanFamily("flux2", flux2_configs, flux2_shapes,
                      workload={"time_tokens": 0, "input_pixels": (MAX_PIXELS,), "text_tokens": TEXT_TOKENS})


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
        # The timestep embedding carries gradients only when an adapter sits on its path (all-linear,
        # include_embedders); else the modulations and norm_out's linear keep no cast, proj_out (fed by the blocks)
        # does (measured).
        outside = linear - blocks - fed
        if not _adapted_in(model, "time_guidance_embed"):
            outside = count_linears(transformer.proj_out)[0]
    adapted = adapted_linears(model)
    cfg = transformer.config
    hidden = cfg.num_attention_heads * cfg.attention_head_dim
    return ModelShapes(
        hidden=hidden, intermediate=int(hidden * cfg.mlp_ratio), heads=cfg.num_attention_heads,
        layers=cfg.num_layers + cfg.num_single_layers, linear_params=linear, other_params=other, buffers=buffers,
        adapter_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        adapted=tuple((m.in_features, m.out_features) for m in adapted),
        vae_params=sum(p.numel() for p in vae.parameters()), method=spec.method,
        block_linear_params=blocks, outside_linear_params=outside,
        prompt_encoder_params=sum(p.numel() for p in text_encoder.parameters()),
        # its no-grad forward returns every layer's hidden states and the logits (the text encoder's dtype)
        prompt_encoder_bytes_per_token=4 * ((text_config.num_hidden_layers + 1) * text_config.hidden_size
                                            + text_config.vocab_size),
        activations=Flux2Activations(
            cfg.num_layers, cfg.num_single_layers,
            tuple((m.in_features, m.out_features, "text" if _TEXT_STREAM.search(name) else "image")
                  for name, m in _adapted_in(model, "transformer_blocks.0.")),
            tuple((m.in_features, m.out_features) for _, m in _adapted_in(model, "single_transformer_blocks.0.")),
            cfg.attention_head_dim, cfg.in_channels if _adapted_in(model, "x_embedder") else 0,
            cfg.joint_attention_dim if _adapted_in(model, "context_embedder") else 0))


_TEXT_STREAM = re.compile(r"\.(add_[qkv]_proj|to_add_out|ff_context)\b")


def _adapted_in(model, prefix: str) -> list:
    """(name, base linear) of the adapted linears whose module name in the base transformer starts with `prefix`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    adapted = set(adapted_linears(model))
    return [(name, m) for name, m in base.named_modules() if name.startswith(prefix) and m in adapted]


# bytes per hidden value per token that passes a block, measured with every linear adapted and more rows than any
# adapted linear has input features (module docstring): (fp32 step?, fused DEFT layer?) -> (double, single)
BLOCK_BYTES_PER_H = {(True, True): (104.6, 92.5), (True, False): (104.6, 92.5),
                     (False, True): (56.5, 54.4), (False, False): (61.9, 54.2)}


@dataclass(frozen=True)
class Flux2Activations(Activations):
    """klein's activation model (the module docstring) for one transformer: its block counts and the adapted linears
    of one block of each kind ((in, out, stream) of a double-stream block, stream "image" or "text"; (in, out) of a
    single-stream block)."""
    double_layers: int = 0
    single_layers: int = 0
    double_adapted: tuple = ()
    single_adapted: tuple = ()
    head_dim: int = 128
    in_channels: int = 0  # the patch embedder's input size when that linear is adapted (its input is kept), else 0
    text_dim: int = 0  # the text embedder's input size when that linear is adapted, else 0

    def blocks(self, shapes: ModelShapes, setup: Setup, rank: int, image_rows: int, text_rows: int
               ) -> tuple[float, float]:
        """(one double-stream block, one single-stream block)'s bytes for a call of these rows: the measured per-H
        bytes, each adapted linear's rank-r projection (fp32) for the rows it sees and, for the fused DEFT layer, its
        base output where the rows are fewer than its input features."""
        c = DTYPE_BYTES[setup.compute]
        fused = shapes.method in FUSED_DEFT
        double, single = BLOCK_BYTES_PER_H[(c == 4, fused)]
        rows = image_rows + text_rows
        double *= shapes.hidden * rows
        single *= shapes.hidden * rows
        for inp, out, stream in self.double_adapted:
            seen = image_rows if stream == "image" else text_rows
            double += seen * (4 * rank + (out * c if fused and seen < inp else 0))
        for inp, out in self.single_adapted:
            single += rows * (4 * rank + (out * c if fused and rows < inp else 0))
        return double, single

    def block(self, shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
        """Bytes the larger block keeps for `tokens` rows (all image rows: the recomputed block of the backward)."""
        return max(self.blocks(shapes, setup, rank, tokens, 0))

    def saved(self, shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int | None = None,
              output_tokens: int | None = None) -> float:
        # the residual stream starts at x_embedder's output, in the compute dtype under autocast too (measured: an
        # fp32 base under bf16 autocast keeps what a bf16 base keeps, but the weight casts)
        c = DTYPE_BYTES[setup.compute]
        tokens = work.batch * (seq_len or work.seq_len)
        text = work.batch * work.text_tokens
        images = tokens - text
        once = (images * (8 * self.head_dim + (self.in_channels + 3 * shapes.hidden) * c)
                + text * (8 * self.head_dim + self.text_dim * c))
        kept = shapes.outside_linear_params + (0 if setup.checkpointing else shapes.block_linear_params)
        casts = kept * c if setup.stream_bytes > c else 0  # an fp32 base under autocast keeps each cast weight
        if setup.checkpointing:
            return shapes.layers * tokens * shapes.hidden * c + once + casts
        double, single = self.blocks(shapes, setup, rank, images, text)
        return self.double_layers * double + self.single_layers * single + once + casts

    def batch(self, work: Workload) -> tuple[float, str]:
        pixels = 3 * 4 * (work.image_size ** 2 + work.input_images * work.input_size ** 2)
        return work.batch * pixels, "pixels, fp32"





def reduced_flux2_config(heads: int = 3, head_dim: int = 32, layers: int = 2, single_layers: int = 2) -> dict:
    """A width-reduced klein transformer for the measurement (the tiny preset's shape otherwise)."""
    from omnideft.families.flux2.model import tiny_transformer_config

    axis = head_dim // 4
    return {**tiny_transformer_config(), "num_attention_heads": heads, "attention_head_dim": head_dim,
            "num_layers": layers, "num_single_layers": single_layers, "axes_dims_rope": (axis,) * 4}


def measure_flux2_step(config: dict, spec, setup: Setup, text_tokens: int, input_images: int, latent_side: int,
                       batch: int = 1, seed: int = 0) -> dict:
    """One forward/backward/AdamW step of the klein transformer `config` with adapter `spec` on random text states
    and packed latents (`latent_side`^2 tokens per image, the target's and `input_images` references'): measured bytes
    by part (sizing/measure.py's parts) and the plan's prediction of them."""
    import torch
    from diffusers import Flux2KleinPipeline, Flux2Transformer2DModel

    from omnideft.families.flux2.model import tiny_text_encoder_config, tiny_vae_config
    from omnideft.sizing.estimate import measured_parts
    from omnideft.sizing.measure import adapted_for_step, autocast_for, saved_tensor_bytes, step_bytes

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapted_for_step(Flux2Transformer2DModel(**config), spec, setup, target_modules)
        channels = config["in_channels"]
        latents = [torch.randn(batch, channels, latent_side, latent_side) for _ in range(input_images + 1)]
        ids = Flux2KleinPipeline._prepare_latent_ids(latents[0])
        if input_images:
            ids = torch.cat([ids, Flux2KleinPipeline._prepare_image_ids([x[:1] for x in latents[1:]])
                             .expand(batch, -1, -1)], dim=1)
        tokens = torch.cat([Flux2KleinPipeline._pack_latents(x) for x in latents], dim=1)
        text = torch.randn(batch, text_tokens, config["joint_attention_dim"])
        with saved_tensor_bytes(model) as saved, autocast_for(setup):
            out = model(hidden_states=tokens, timestep=torch.rand(batch), encoder_hidden_states=text,
                        txt_ids=Flux2KleinPipeline._prepare_text_ids(text), img_ids=ids, return_dict=False)[0]
        measured = step_bytes(model, out[:, :latent_side ** 2], saved)
    per_image = latent_side ** 2
    seq = text_tokens + (input_images + 1) * per_image
    configs = {"transformer": config, "text_encoder": tiny_text_encoder_config(261).to_dict(), "vae": tiny_vae_config()}
    shapes = flux2_shapes(configs, spec)
    work = Workload(batch=batch, input_images=input_images, text_tokens=text_tokens, image_size=latent_side * 16,
                    time_tokens=0)
    predicted = measured_parts(shapes, setup, work, spec.rank, seq, per_image)
    return {"seq_len": seq, "measured": measured, "predicted": predicted}
