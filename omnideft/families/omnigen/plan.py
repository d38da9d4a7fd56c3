"""OmniGen (v1) for the planner: its component configs (the real OmniGen's ship in
configs/omnigen-v1-diffusers.json, read from a local diffusers folder, or built for `tiny`/`small`), its sizes counted
on the meta device (diffusers' OmniGenTransformer2DModel and AutoencoderKL), its activation model and the CPU
measurement that holds that model to the bytes a step really keeps.

The activation model counts what autograd keeps for backward in diffusers' `OmniGenBlock` with omnideft's fused DEFT
layer (omnideft/adapters/fast_deft.py), per token of the joint sequence, with `c` the compute dtype's bytes and `s`
the residual stream's (the storage dtype of the unquantised parameters):

    block input, attention input (normed), q, k, v, attention output, residual after attention, normed MLP input:
        8 H values;  MLP: gate_up output (2 I), silu(gate) (I), product into down_proj (I): 4 I values      -> at c
    RMSNorm's fp32 copies of its two inputs when s < 4 (2 H), its two rsqrt (2), attention log-sum-exp (heads),
    and each adapted linear's rank-r projection t (r per linear)                                          -> fp32

plus, once per step, the additive attention mask (B L^2 at s), RoPE's cos and sin (2 L head_dim, fp32) and the final
norm. With gradient checkpointing only each block's input (H at s) stays, and backward recomputes one block at a time.
The attention kernel is the fused one (CPU flash attention, CUDA memory-efficient attention with a mask): it keeps
the log-sum-exp, never the L x L probabilities. tests/test_plan.py measures the saved tensors of width-reduced
models with `torch.autograd.graph.saved_tensors_hooks` and holds this model to within 10 %.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

import torch

from omnideft.errors import UserError
from omnideft.families.omnigen.model.loading import DEFAULT_MODEL_ID
from omnideft.families.omnigen.model.small import SMALL, small_model_dir
from omnideft.families.omnigen.model.tiny import omnigen_config
from omnideft.families.omnigen.targets import target_modules
from omnideft.model.presets import TINY
from omnideft.sizing.estimate import DTYPE_BYTES, FUSED_DEFT, Activations, Setup, Workload, measured_parts
from omnideft.sizing.measure import adapted_for_step, autocast_for, saved_tensor_bytes, step_bytes
from omnideft.sizing.shapes import ModelShapes, PlanFamily, adapted_linears, count_linears

SHIPPED_CONFIGS = {DEFAULT_MODEL_ID: "omnigen-v1-diffusers.json"}


def plan_entry() -> PlanFamily:
    return PlanFamily("omnigen", _configs, _count)


def _configs(name: str) -> tuple[dict, str]:
    transformer, vae = model_configs(name)
    return {"transformer": transformer, "vae": vae}, ""


def _count(configs: dict, spec) -> ModelShapes:
    return measure_shapes(configs["transformer"], configs["vae"], spec)


def model_configs(name: str) -> tuple[dict, dict]:
    """(transformer config, VAE config) of a model name as the recipe's `model.name` spells it."""
    if name in SHIPPED_CONFIGS:
        raw = json.loads(files("omnideft.families.omnigen").joinpath("configs", SHIPPED_CONFIGS[name]).read_text())
        return raw["transformer"], raw["vae"]
    if name == TINY:
        from omnideft.families.omnigen.model.tiny import tiny_transformer_config, tiny_vae_config

        return tiny_transformer_config(), tiny_vae_config()
    folder = small_model_dir() if name == SMALL else Path(name)
    configs = [folder / "transformer" / "config.json", folder / "vae" / "config.json"]
    if not all(c.is_file() for c in configs):
        raise UserError(f"plan: no config for model {name!r}: give a local diffusers folder (transformer/config.json, "
                        f"vae/config.json), 'tiny', 'small' or one of {', '.join(SHIPPED_CONFIGS)}")
    return tuple(json.loads(c.read_text()) for c in configs)


def measure_shapes(transformer_config: dict, vae_config: dict, spec) -> ModelShapes:
    """Build the transformer and VAE on the meta device, inject the adapter `spec`, and count."""
    from diffusers import AutoencoderKL, OmniGenTransformer2DModel

    from omnideft.adapters import apply_adapter

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
                       other, buffers, adapter, adapted, sum(p.numel() for p in vae.parameters()), spec.method,
                       activations=OMNIGEN_ACTIVATIONS)


def block_saved_bytes(shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
    """Bytes autograd keeps for one block's backward, for `tokens` = B x L rows (see the module docstring)."""
    c, s = DTYPE_BYTES[setup.compute], setup.stream_bytes
    h, i = shapes.hidden, shapes.intermediate
    fp32 = (2 * h if min(c, s) < 4 else 0) + 2 + shapes.heads + shapes.adapted_per_layer * rank
    per_token = 8 * h * c + 4 * i * c + 4 * fp32
    if shapes.method == "lora" and c == s < 4:
        per_token += 3 * h * c  # PEFT's LoRA casts its input to the fp32 adapter dtype and autocast back (measured)
    if shapes.method not in FUSED_DEFT and setup.base in ("int8", "fp8"):
        per_token += 2 * h * c  # optimum-quanto's QLinear keeps its own copies of the block inputs (measured)
    # The fused DEFT layer keeps its base output y when there are fewer rows than input features (fast_deft.py).
    kept_y = sum(out * c for inp, out in shapes.adapted[: shapes.adapted_per_layer] if tokens < inp
                 ) if shapes.method in FUSED_DEFT else 0
    return per_token * tokens + kept_y * tokens


def saved_activation_bytes(shapes: ModelShapes, setup: Setup, work: Workload, rank: int,
                           seq_len: int | None = None, output_tokens: int | None = None) -> float:
    """What autograd holds at the end of the forward pass (what saved_tensors_hooks see)."""
    b = work.batch
    seq = seq_len or work.seq_len
    out_tokens = output_tokens or work.image_tokens
    s = setup.stream_bytes
    tokens = b * seq
    once = (b * seq * seq * s  # additive mask [B, 1, L, L] in the stream dtype
            + 2 * b * seq * shapes.head_dim * 4  # RoPE cos, sin (fp32)
            + tokens * (4 * shapes.hidden + 4 + (shapes.hidden * s if s < 4 else 0))  # final RMSNorm: fp32 rows,
            # rsqrt, and its half-precision input when the stream is not fp32
            + b * out_tokens * shapes.hidden * (s + 4))  # adaLN output norm and projection of the image tokens
    if setup.checkpointing:
        return shapes.layers * tokens * shapes.hidden * s + once
    # An fp32-stored base under bf16/fp16 autocast: every linear's weight is cast per forward and the cast copy is
    # kept for backward (measured) -- a second, half-precision copy of the whole base. Why presets store it in bf16.
    # Only the blocks' linears: the timestep embedders' inputs need no gradient, so nothing is kept for them.
    block_linears = shapes.layers * (4 * shapes.hidden ** 2 + 3 * shapes.hidden * shapes.intermediate)
    casts = block_linears * DTYPE_BYTES[setup.compute] if s > DTYPE_BYTES[setup.compute] else 0
    return shapes.layers * block_saved_bytes(shapes, setup, rank, tokens) + once + casts


class OmniGenActivations(Activations):
    """OmniGen v1's activation model: the formulas above."""

    def saved(self, shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int | None = None,
              output_tokens: int | None = None) -> float:
        return saved_activation_bytes(shapes, setup, work, rank, seq_len, output_tokens)

    def block(self, shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
        return block_saved_bytes(shapes, setup, rank, tokens)

    def batch(self, work: Workload) -> tuple[float, str]:
        return (work.batch * work.seq_len ** 2 * 4 + work.batch * (work.input_images + 1) * 3 * work.image_size ** 2
                * 4, "0/1 mask [B, L, L] and pixels, fp32")


OMNIGEN_ACTIVATIONS = OmniGenActivations()


OMNIGEN_ACTIVATIONS = OmniGenActivations()


def reduced_config(hidden: int = 128, heads: int = 4, layers: int = 2, intermediate: int = 256) -> dict:
    return omnigen_config(hidden, heads, layers, intermediate, vocab_size=256, time_step_dim=64, pos_embed_max_size=32)


def measure_step(config: dict, spec, setup: Setup, text_tokens: int, input_images: int, latent_side: int,
                 batch: int = 1, seed: int = 0) -> dict:
    """One forward/backward/AdamW step of the model `config` with adapter `spec`: measured bytes by part, and the
    plan's prediction of the same parts (`predicted`)."""
    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.model.tiny import tiny_vae_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapted_for_step(OmniGenTransformer2DModel(**config), spec, setup, target_modules)
        per_image = (latent_side // 2) ** 2
        text_len = text_tokens + input_images * per_image
        seq = text_len + 1 + per_image
        ids = torch.randint(3, config["vocab_size"], (batch, text_len))
        spans = {b: [[text_tokens + k * per_image, text_tokens + (k + 1) * per_image] for k in range(input_images)]
                 for b in range(batch)}
        latents = [torch.randn(1, 4, latent_side, latent_side) for _ in range(batch * input_images)]
        x = torch.randn(batch, 4, latent_side, latent_side)
        mask = torch.ones(batch, seq, seq)
        positions = torch.arange(seq).expand(batch, seq)
        with saved_tensor_bytes(model) as saved, autocast_for(setup):
            out = model(hidden_states=x, timestep=torch.rand(batch), input_ids=ids, input_img_latents=latents,
                        input_image_sizes=spans, attention_mask=mask, position_ids=positions, return_dict=False)[0]
        measured = step_bytes(model, out, saved)
    shapes = measure_shapes(config, tiny_vae_config(), spec)
    work = Workload(batch=batch, input_images=input_images, text_tokens=text_tokens, image_size=latent_side * 8)
    predicted = measured_parts(shapes, setup, work, spec.rank, seq, per_image)
    return {"seq_len": seq, "measured": measured, "predicted": predicted}
