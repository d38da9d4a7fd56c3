"""The `tiny` preset: OmniGen's real architecture at toy width, randomly initialised from a seed.

Used by tests; runs on one CPU core in milliseconds per step. `omnigen_config` also sizes the `small` preset's
transformer (omnideft/families/omnigen/model/small.py), which is pretrained rather than random.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenTransformer2DModel

from omnideft.model.tokenizer import build_tiny_tokenizer, tiny_vocab

TINY_HIDDEN = 32
TINY_HEADS = 4


def omnigen_config(hidden_size: int, num_heads: int, num_layers: int, intermediate_size: int, vocab_size: int,
                   time_step_dim: int, pos_embed_max_size: int = 32, in_channels: int = 4) -> dict:
    """diffusers OmniGenTransformer2DModel kwargs at a reduced size: OmniGen's layout (4 latent channels unless
    told, 2x2 patches, Phi-3-style blocks, su-scaled RoPE) with the width, depth and vocabulary given. The
    vocabulary is rounded up to a multiple of 64, as Phi-3's is."""
    head_dim = hidden_size // num_heads
    factors = [1.0 + i / (head_dim // 2) for i in range(head_dim // 2)]
    return dict(
        in_channels=in_channels,
        patch_size=2,
        hidden_size=hidden_size,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        intermediate_size=intermediate_size,
        num_layers=num_layers,
        pad_token_id=2,
        vocab_size=math.ceil(vocab_size / 64) * 64,
        rope_scaling={"short_factor": factors, "long_factor": factors},
        pos_embed_max_size=pos_embed_max_size,  # 32 patches = a latent side of 64 -> images up to 512 px
        time_step_dim=time_step_dim,
    )


def tiny_transformer_config() -> dict:
    return omnigen_config(TINY_HIDDEN, TINY_HEADS, num_layers=2, intermediate_size=64, vocab_size=len(tiny_vocab()),
                          time_step_dim=32)


def tiny_vae_config(channels: int = 8, latent_channels: int = 4) -> dict:
    # Four down/up blocks: a true 8x VAE, as OmniGen's processor assumes 16 px per token after 2x2 patching.
    return dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(channels,) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=4,
    )


def build_tiny(seed: int = 0):
    """Return (transformer, vae, tokenizer, scheduler) of the tiny preset, deterministic for a seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = OmniGenTransformer2DModel(**tiny_transformer_config())
        vae = AutoencoderKL(**tiny_vae_config())
    return transformer, vae, build_tiny_tokenizer(), flow_scheduler()


def flow_scheduler() -> FlowMatchEulerDiscreteScheduler:
    """OmniGen's scheduler configuration: t runs from 0 (noise) to 1 (data)."""
    return FlowMatchEulerDiscreteScheduler(invert_sigmas=True, num_train_timesteps=1)
