"""The `tiny` OmniGen2 preset: the published architecture at toy width, randomly initialised from a seed.

A Qwen2.5-VL with a 2-layer text model (hidden 32, M-RoPE sections 2/1/1) and a 1-block vision tower, the offline
byte-level tokenizer (model/tokenizer.py), an OmniGen2 transformer of width 48 (4 heads / 2 KV
heads, RoPE axes 4/4/4, 2 layers, 2 refiner layers) and a 16-channel 8x AutoencoderKL with FLUX-style shift and
scale factors. Every parameter, norm weights and the adaLN projections included, is drawn from the seed, so that no
path of the forward is an identity and the exactness tests see every weight.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from omnideft.families.omnigen2.model.scheduler import OmniGen2FlowScheduler
from omnideft.families.omnigen2.model.tokenizer import SPECIALS, build_tiny_qwen_tokenizer
from omnideft.families.omnigen2.model.transformer import OmniGen2Transformer

TINY_TEXT_HIDDEN = 32
# FLUX.1's VAE factors (its vae/config.json): latents are (z - shift) * scale.
VAE_SHIFT_FACTOR = 0.1159
VAE_SCALING_FACTOR = 0.3611


def tiny_transformer_config() -> dict:
    return dict(patch_size=2, in_channels=16, hidden_size=48, num_layers=2, num_refiner_layers=2,
                num_attention_heads=4, num_kv_heads=2, multiple_of=16, ffn_dim_multiplier=None, norm_eps=1e-5,
                axes_dim_rope=(4, 4, 4), axes_lens=(10000, 10000, 10000), text_feat_dim=TINY_TEXT_HIDDEN,
                timestep_scale=1000.0)


def tiny_vae_config() -> dict:
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8,) * 4, layers_per_block=1,
                latent_channels=16, norm_num_groups=4, sample_size=64, shift_factor=VAE_SHIFT_FACTOR,
                scaling_factor=VAE_SCALING_FACTOR, use_quant_conv=False, use_post_quant_conv=False)


def tiny_mllm_config(vocab_size: int) -> Qwen2_5_VLConfig:
    ids = {name: SPECIALS.index(tok) for name, tok in [("image_token_id", "<|image_pad|>"),
           ("video_token_id", "<|video_pad|>"), ("vision_start_token_id", "<|vision_start|>"),
           ("vision_end_token_id", "<|vision_end|>")]}
    text = dict(vocab_size=vocab_size, hidden_size=TINY_TEXT_HIDDEN, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 1, 1]},
                bos_token_id=SPECIALS.index("<|endoftext|>"), eos_token_id=SPECIALS.index("<|im_end|>"),
                pad_token_id=SPECIALS.index("<|endoftext|>"))
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=TINY_TEXT_HIDDEN,
                  patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                  fullatt_block_indexes=[0])
    return Qwen2_5_VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **ids)


def _draw(module: torch.nn.Module, spread: float) -> None:
    """Every parameter from the current RNG: matrices ~ N(0, spread^2 / fan_in), vectors 1 + N(0, 0.1^2) for norm
    weights and N(0, 0.1^2) otherwise."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, spread / p[0].numel() ** 0.5)
            elif "norm" in name and name.endswith("weight"):
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.1)


def build_tiny_omnigen2(seed: int = 0):
    """(transformer, vae, mllm, tokenizer, scheduler), deterministic for a seed."""
    tokenizer = build_tiny_qwen_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = OmniGen2Transformer(**tiny_transformer_config())
        _draw(transformer, 1.0)
        vae = AutoencoderKL(**tiny_vae_config())
        mllm = Qwen2_5_VLForConditionalGeneration(tiny_mllm_config(len(tokenizer)))
        _draw(mllm, 1.0)
    return transformer.eval(), vae.eval(), mllm.eval(), tokenizer, OmniGen2FlowScheduler()
