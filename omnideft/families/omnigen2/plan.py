"""OmniGen2 for the planner, in one place: its component configs (the published model's ship in
configs/omnigen2.json: transformer, Qwen2.5-VL-3B-Instruct MLLM, FLUX VAE), its sizes counted on the meta device
(omnideft's own transformer, transformers' Qwen2_5_VLForConditionalGeneration, diffusers' AutoencoderKL), its
activation model and the CPU measurement that holds that model to the bytes a step really keeps.

The activation model counts what autograd keeps in omnideft's `OmniGen2Block` (model/blocks.py) with the
fused DEFT layer, per token, for the three ways a step runs (c = compute bytes, s = the residual stream's): fp32
(c = s = 4); an fp32 base under bf16/fp16 autocast (s = 4, c = 2: autocast casts each linear's input anew, the
RMSNorms and the SwiGLU's silu work in fp32); a half-precision base (c = s = 2: every RMSNorm keeps an fp32 copy of
its input). Per token of a block, in hidden-size (H), key/value (H_kv) and feed-forward (I) values:

    fp32:      15 H + H_kv + 4 I at 4 bytes
    autocast:  7 H + H_kv + 2 I at 4 bytes,  12 H + H_kv + 2 I at c
    half base: 5 H + H_kv + I at 4 bytes,    11 H + H_kv + 3 I at c

plus the four norms' rsqrt, the query/key norms' (heads + kv heads), the attention log-sum-exp (heads) and each
adapted linear's rank-r projection in fp32, and the key mask at c. The refiners see every token once more: the caption
refiner the caption, the noise refiner the target, the reference refiner each input image. Once per step: the 3-axis
RoPE rotations (complex128), the output norm and projection, the patch and caption embedders' inputs. With gradient
checkpointing only each block's input (H at s) stays.
"""

from __future__ import annotations

import json
from importlib.resources import files
from pathlib import Path

from omnideft.errors import UserError
from omnideft.families.omnigen2.batch import MAX_INPUT_PIXELS  # the published input budgets by count
from omnideft.families.omnigen2.targets import target_modules
from omnideft.model.presets import TINY
from omnideft.sizing.estimate import DTYPE_BYTES, FUSED_DEFT, Activations, Setup, Workload, measured_parts
from omnideft.sizing.measure import adapted_for_step, autocast_for, saved_tensor_bytes, step_bytes
from omnideft.sizing.shapes import ModelShapes, PlanFamily, adapted_linears, count_linears

PUBLISHED_ID = "OmniGen2/OmniGen2"  # the hub id of the model whose configs ship in configs/omnigen2.json
CONFIG_FILE = "omnigen2.json"
COMPONENTS = ("transformer", "mllm", "vae")


def plan_entry() -> PlanFamily:
    return PlanFamily("omnigen2", omnigen2_configs, omnigen2_shapes,
                      workload={"time_tokens": 0, "input_pixels": MAX_INPUT_PIXELS})


def omnigen2_configs(name: str) -> tuple[dict, str]:
    """({"transformer", "mllm", "vae"} configs, where they came from) for `model.name`: 'tiny', a local folder in
    the published layout, or -- the published id or a folder not downloaded yet -- the shipped published configs."""
    if name == TINY:
        from omnideft.families.omnigen2.model.tiny import tiny_mllm_config, tiny_transformer_config, tiny_vae_config
        from omnideft.families.omnigen2.model.tokenizer import build_tiny_qwen_tokenizer

        mllm = tiny_mllm_config(len(build_tiny_qwen_tokenizer())).to_dict()
        return {"transformer": tiny_transformer_config(), "mllm": mllm, "vae": tiny_vae_config()}, ""
    folder = Path(name).expanduser()
    if folder.is_dir():
        paths = {part: folder / part / "config.json" for part in COMPONENTS}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise UserError(f"plan: {name} is not a complete OmniGen2 folder: no {', '.join(missing)}")
        try:
            return {part: json.loads(p.read_text()) for part, p in paths.items()}, ""
        except json.JSONDecodeError as exc:
            raise UserError(f"plan: a config of {name} is not JSON: {exc}") from None
    shipped = json.loads(files("omnideft.families.omnigen2").joinpath("configs", CONFIG_FILE).read_text())
    return shipped, ("" if name == PUBLISHED_ID else f"{name} not found: the published {PUBLISHED_ID} configs "
                     "shipped in omnideft/families/omnigen2/configs/")


def omnigen2_shapes(configs: dict, spec) -> ModelShapes:
    """Build the transformer, MLLM and VAE on the meta device, inject the adapter `spec` into the transformer, and
    count (the MLLM's tied embedding counts once, as transformers ties it)."""
    import torch
    from diffusers import AutoencoderKL
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from omnideft.adapters import apply_adapter
    from omnideft.families.omnigen2.model.transformer import OmniGen2Transformer

    with torch.device("meta"):
        transformer = OmniGen2Transformer.from_config(configs["transformer"])
        mllm_config = Qwen2_5_VLConfig.from_dict(configs["mllm"])
        mllm = Qwen2_5_VLForConditionalGeneration(mllm_config)
        vae = AutoencoderKL.from_config(configs["vae"])
        transformer.requires_grad_(False)
        linear, other, buffers = count_linears(transformer)
        embed = transformer.time_caption_embed
        blocks = sum(count_linears(stack)[0] for stack in (transformer.layers, transformer.noise_refiner,
                                                           transformer.ref_image_refiner, transformer.context_refiner))
        # the linears fed by the data (patches, the timestep's sinusoid, the MLLM's states) keep no weight cast
        fed = sum(count_linears(m)[0] for m in (transformer.x_embedder, transformer.ref_image_patch_embedder,
                                                embed.timestep_embedder.linear_1, embed.caption_embedder))
        model = apply_adapter(transformer, spec, targets=target_modules)
    adapter = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapted = adapted_linears(model)
    cfg, text = transformer.config, mllm_config.text_config
    block = transformer.layers[0]
    return ModelShapes(
        hidden=cfg.hidden_size, intermediate=block.feed_forward.linear_1.out_features,
        heads=cfg.num_attention_heads, layers=cfg.num_layers, linear_params=linear, other_params=other,
        buffers=buffers, adapter_params=adapter, adapted=tuple((m.in_features, m.out_features) for m in adapted),
        vae_params=sum(p.numel() for p in vae.parameters()), method=spec.method, kv_heads=cfg.num_kv_heads,
        refiner_layers=cfg.num_refiner_layers, block_linear_params=blocks,
        outside_linear_params=linear - blocks - fed,
        block_adapted=tuple((m.in_features, m.out_features) for m in adapted_linears(block)),
        prompt_encoder_params=sum(p.numel() for p in mllm.parameters()),
        # its no-grad forward returns every layer's hidden states and the logits, fp32
        prompt_encoder_bytes_per_token=4 * ((text.num_hidden_layers + 1) * text.hidden_size + text.vocab_size),
        activations=OMNIGEN2_ACTIVATIONS)


class OmniGen2Activations(Activations):
    """OmniGen2's activation model (the module docstring)."""

    def block(self, shapes: ModelShapes, setup: Setup, rank: int, tokens: int) -> float:
        """Bytes autograd keeps for one block's backward, for `tokens` rows in the call."""
        c, s = DTYPE_BYTES[setup.compute], setup.stream_bytes
        h, i, heads = shapes.hidden, shapes.intermediate, shapes.heads
        kv = h * (shapes.kv_heads or heads) // heads
        if c == s == 4:
            fp32, half = 15 * h + kv + 4 * i, 0
        elif s == 4:
            fp32, half = 7 * h + kv + 2 * i, 12 * h + kv + 2 * i
        else:
            fp32, half = 5 * h + kv + i, 11 * h + kv + 3 * i
        fp32 += 4 + 2 * heads + (shapes.kv_heads or heads) + len(shapes.block_adapted) * rank
        per_token = 4 * fp32 + c * half + c  # + the key mask at c
        if shapes.method == "lora" and c == s < 4:
            per_token += 3 * h * c  # PEFT's LoRA casts its input to the fp32 adapter dtype (as measured for v1)
        # The fused DEFT layer keeps its base output when there are fewer rows than input features (fast_deft.py).
        kept_y = sum(out * c for inp, out in shapes.block_adapted if tokens < inp) if shapes.method in FUSED_DEFT else 0
        return (per_token + kept_y) * tokens

    def saved(self, shapes: ModelShapes, setup: Setup, work: Workload, rank: int, seq_len: int | None = None,
              output_tokens: int | None = None) -> float:
        b, s, c = work.batch, setup.stream_bytes, DTYPE_BYTES[setup.compute]
        seq = seq_len or work.seq_len
        out_tokens = output_tokens or work.image_tokens
        in_tokens = (seq - work.text_tokens - out_tokens) // max(work.input_images, 1)
        tokens = b * seq
        head_dim = shapes.hidden // shapes.heads
        # the refiners' calls: caption, target, every input image (one call over all of them)
        calls = [b * work.text_tokens, b * out_tokens] + ([b * work.input_images * in_tokens]
                                                          if work.input_images else [])
        once = (2 * tokens * head_dim // 2 * 16  # RoPE rotations of the packed sequence and of the refiners' parts
                + tokens * (2 * shapes.hidden * s + shapes.hidden * c + 2 * s + 4 * rank)  # output norm, projection
                + b * (seq - work.text_tokens) * (64 * s + 4 * rank)  # patch embedders' inputs (2x2x16 values)
                + b * work.text_tokens * 2 * shapes.hidden * 4)  # caption embedder's norm and projection inputs
        # An fp32 base under autocast: each linear's cast weight is kept for backward (as measured for v1); with
        # checkpointing only those outside the blocks.
        kept = shapes.outside_linear_params + (0 if setup.checkpointing else shapes.block_linear_params)
        casts = kept * c if s > c else 0
        if setup.checkpointing:
            return (shapes.layers + shapes.refiner_layers) * tokens * shapes.hidden * s + once + casts
        refiners = shapes.refiner_layers * sum(self.block(shapes, setup, rank, n) for n in calls if n)
        return shapes.layers * self.block(shapes, setup, rank, tokens) + refiners + once + casts

    def batch(self, work: Workload) -> tuple[float, str]:
        pixels = 3 * 4 * (work.image_size ** 2 + work.input_images * work.input_size ** 2)
        return work.batch * pixels, "pixels, fp32 (no [L, L] mask: the attention takes a key mask)"


OMNIGEN2_ACTIVATIONS = OmniGen2Activations()


def reduced_omnigen2_config(hidden: int = 96, heads: int = 4, kv_heads: int = 2, layers: int = 2) -> dict:
    """A width-reduced OmniGen2 transformer for the measurement (head dim split over the three RoPE axes)."""
    from omnideft.families.omnigen2.model.tiny import tiny_transformer_config

    head_dim = hidden // heads
    axis = head_dim // 3 // 2 * 2
    return {**tiny_transformer_config(), "hidden_size": hidden, "num_attention_heads": heads, "num_kv_heads": kv_heads,
            "num_layers": layers, "axes_dim_rope": (axis, axis, head_dim - 2 * axis)}


def measure_omnigen2_step(config: dict, spec, setup: Setup, text_tokens: int, input_images: int, latent_side: int,
                          batch: int = 1, seed: int = 0) -> dict:
    """One forward/backward/AdamW step of the OmniGen2 transformer `config` with adapter `spec` on random MLLM
    states and latents: measured bytes by part (sizing/measure.py's parts) and the plan's prediction of them."""
    import torch

    from omnideft.families.omnigen2.model.tiny import tiny_mllm_config, tiny_vae_config
    from omnideft.families.omnigen2.model.transformer import OmniGen2Transformer

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapted_for_step(OmniGen2Transformer(**config), spec, setup, target_modules)
        c = config["in_channels"]
        text = torch.randn(batch, text_tokens, config["text_feat_dim"])
        mask = torch.ones(batch, text_tokens, dtype=torch.bool)
        refs = [[torch.randn(c, latent_side, latent_side) for _ in range(input_images)] for _ in range(batch)]
        x = torch.randn(batch, c, latent_side, latent_side)
        with saved_tensor_bytes(model) as saved, autocast_for(setup):
            out = model(x, torch.rand(batch), text, mask, refs)
        measured = step_bytes(model, out, saved)
    per_image = (latent_side // 2) ** 2
    seq = text_tokens + (input_images + 1) * per_image
    configs = {"transformer": config, "mllm": tiny_mllm_config(64).to_dict(), "vae": tiny_vae_config()}
    shapes = omnigen2_shapes(configs, spec)
    work = Workload(batch=batch, input_images=input_images, text_tokens=text_tokens, image_size=latent_side * 8,
                    time_tokens=0)
    predicted = measured_parts(shapes, setup, work, spec.rank, seq, per_image)
    return {"seq_len": seq, "measured": measured, "predicted": predicted}
