"""The `tiny` preset: OmniGen's real architecture at toy width, randomly initialised from a seed.

Used by tests and the demo; runs on one CPU core in milliseconds per step.
"""

from __future__ import annotations

import math

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, OmniGenTransformer2DModel

from omnideft.model.tokenizer import build_tiny_tokenizer, tiny_vocab

TINY_HIDDEN = 32
TINY_HEADS = 4


def tiny_transformer_config() -> dict:
    head_dim = TINY_HIDDEN // TINY_HEADS
    vocab = math.ceil(len(tiny_vocab()) / 64) * 64
    factors = [1.0 + i / (head_dim // 2) for i in range(head_dim // 2)]
    return dict(
        in_channels=4,
        patch_size=2,
        hidden_size=TINY_HIDDEN,
        num_attention_heads=TINY_HEADS,
        num_key_value_heads=TINY_HEADS,
        intermediate_size=64,
        num_layers=2,
        pad_token_id=2,
        vocab_size=vocab,
        rope_scaling={"short_factor": factors, "long_factor": factors},
        pos_embed_max_size=32,  # latent side up to 64 -> images up to 512 px
        time_step_dim=32,
    )


def tiny_vae_config() -> dict:
    # Four down/up blocks: a true 8x VAE, as OmniGen's processor assumes 16 px per token after 2x2 patching.
    return dict(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    )


def build_tiny(seed: int = 0):
    """Return (transformer, vae, tokenizer, scheduler) of the tiny preset, deterministic for a seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = OmniGenTransformer2DModel(**tiny_transformer_config())
        vae = AutoencoderKL(**tiny_vae_config())
    scheduler = FlowMatchEulerDiscreteScheduler(invert_sigmas=True, num_train_timesteps=1)
    return transformer, vae, build_tiny_tokenizer(), scheduler
