"""FLUX.2 [klein]'s components as diffusers' Flux2KleinPipeline holds them, loaded from a diffusers folder (the
`black-forest-labs/FLUX.2-klein-base-4B` layout: model_index.json naming Flux2KleinPipeline, transformer/, vae/,
text_encoder/, tokenizer/, scheduler/) or a hub id through `Flux2KleinPipeline.from_pretrained`, and saved back
through the pipeline's `save_pretrained`, so what omnideft writes is what diffusers reads. `tiny` builds the same
classes at toy width from a seed, with an offline byte-level Qwen tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2KleinPipeline, Flux2Transformer2DModel
from transformers import Qwen2Tokenizer, Qwen3Config, Qwen3ForCausalLM

from omnideft.errors import UserError
from omnideft.files import atomic_path
from omnideft.model.presets import TINY

PIPELINE = "Flux2KleinPipeline"
PARTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
# The pipeline's text features: hidden states of these Qwen3 layers, stacked (Flux2KleinPipeline's default
# `text_encoder_out_layers`); the tiny text encoder is deep enough to have them.
TEXT_LAYERS = (9, 18, 27)


@dataclass
class Flux2Components:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    name: str  # what the user asked for: "tiny", a folder or a hub id
    is_distilled: bool = False  # the step-distilled klein (no guidance); the base models take guidance

    def pipeline(self, transformer: torch.nn.Module | None = None) -> Flux2KleinPipeline:
        """diffusers' pipeline on these very modules (nothing copied); `transformer` replaces the base's (an adapted
        one)."""
        return Flux2KleinPipeline(scheduler=self.scheduler, vae=self.vae, text_encoder=self.text_encoder,
                                  tokenizer=self.tokenizer, transformer=transformer or self.transformer,
                                  is_distilled=self.is_distilled)

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


# -- the tiny preset ----------------------------------------------------------------------------------------------

TINY_TEXT_HIDDEN = 16
TINY_LATENT_CHANNELS = 4
# Qwen3's chat template for a user turn, with its `enable_thinking=False` answer prefix (the pipeline asks for it)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
    "{% if enable_thinking is defined and enable_thinking is false %}{{ '<think>\\n\\n</think>\\n\\n' }}{% endif %}"
    "{% endif %}"
)
SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")


def build_tiny_tokenizer() -> Qwen2Tokenizer:
    """Qwen2's tokenizer class (what the published folder's tokenizer/ loads as) on the 256 byte-level symbols and no
    merges: any text, no unknowns, the same ids everywhere, nothing downloaded."""
    from tokenizers.pre_tokenizers import ByteLevel

    vocab = {symbol: i for i, symbol in enumerate(sorted(ByteLevel.alphabet()))}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=512)
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_transformer_config() -> dict:
    return dict(patch_size=1, in_channels=4 * TINY_LATENT_CHANNELS, num_layers=1, num_single_layers=1,
                attention_head_dim=16, num_attention_heads=2, joint_attention_dim=len(TEXT_LAYERS) * TINY_TEXT_HIDDEN,
                timestep_guidance_channels=32, mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4), rope_theta=2000,
                eps=1e-6, guidance_embeds=False)


def tiny_vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8,) * 4, layers_per_block=1,
                latent_channels=TINY_LATENT_CHANNELS, norm_num_groups=4, sample_size=32, use_quant_conv=False,
                use_post_quant_conv=False)


def tiny_text_encoder_config(vocab_size: int) -> Qwen3Config:
    return Qwen3Config(vocab_size=vocab_size, hidden_size=TINY_TEXT_HIDDEN, intermediate_size=32,
                       num_hidden_layers=max(TEXT_LAYERS) + 1, num_attention_heads=2, num_key_value_heads=1,
                       head_dim=8, max_position_embeddings=512, tie_word_embeddings=True)


def tiny_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """FLUX's resolution-dependent shift (the pipeline passes `mu`)."""
    return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True,
                                           base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                                           max_image_seq_len=4096, time_shift_type="exponential")


def _draw(module: torch.nn.Module) -> None:
    """Every parameter from the current RNG (matrices ~ N(0, 1 / fan_in), norm weights 1 + N(0, 0.1^2), other
    vectors N(0, 0.1^2)), so that no path of the forward is an identity and the parity tests see every weight."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 1.0 / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.1)


def build_tiny(seed: int = 0) -> Flux2Components:
    """The tiny klein base, deterministic for a seed (the VAE's latent batch-norm statistics drawn too)."""
    tokenizer = build_tiny_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = Flux2Transformer2DModel(**tiny_transformer_config())
        _draw(transformer)
        vae = AutoencoderKLFlux2(**tiny_vae_config())
        with torch.no_grad():
            vae.bn.running_mean.normal_(0.0, 0.1)
            vae.bn.running_var.uniform_(0.5, 1.5)
        text_encoder = Qwen3ForCausalLM(tiny_text_encoder_config(len(tokenizer)))
        _draw(text_encoder)
    return Flux2Components(transformer, vae, text_encoder, tokenizer, tiny_scheduler(), TINY)


# -- loading and saving -------------------------------------------------------------------------------------------

def load_flux2(name: str, *, dtype: torch.dtype = torch.float32, seed: int = 0,
               revision: str | None = None) -> Flux2Components:
    """`name`: "tiny" (random, from `seed`), a local folder in the diffusers layout or a hub id; every part takes
    `dtype` (the transformer is what omnideft adapts) and is frozen (adapters make their own parameters)."""
    if name == TINY:
        components = build_tiny(seed)
        if dtype != torch.float32:  # (diffusers warns on any .to(dtype) of a model)
            for part in (components.transformer, components.text_encoder, components.vae):
                part.to(dtype)
    else:
        components = _from_pretrained(name, dtype, revision)
    for part in (components.transformer, components.vae, components.text_encoder):
        part.requires_grad_(False)
        part.eval()
    return components


def _from_pretrained(name: str, dtype: torch.dtype, revision: str | None) -> Flux2Components:
    path = Path(name).expanduser()
    if path.is_dir():
        missing = [part for part in PARTS if not (path / part).is_dir()]
        if missing or not (path / "model_index.json").is_file():
            what = ", ".join(f"{p}/" for p in missing) or "model_index.json"
            raise UserError(f"{name} is not a complete FLUX.2 [klein] folder: missing {what}")
        source = str(path)
    else:
        source = name
    try:
        pipe = Flux2KleinPipeline.from_pretrained(source, dtype=dtype, revision=revision)
    except (OSError, ValueError, RuntimeError, TypeError, AttributeError) as exc:
        raise UserError(f"cannot load FLUX.2 [klein] from {name}: {str(exc).strip().splitlines()[0]}") from None
    return Flux2Components(pipe.transformer, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, name,
                           bool(pipe.config.is_distilled))


def save_flux2(components: Flux2Components, out: str | Path) -> Path:
    """The diffusers layout, written by the pipeline's own `save_pretrained` (safetensors); the folder appears
    complete or not at all (omnideft.files.atomic_path)."""
    out = Path(out)
    with atomic_path(out, replace=True) as tmp:
        components.pipeline().save_pretrained(str(tmp), safe_serialization=True)
    return out
