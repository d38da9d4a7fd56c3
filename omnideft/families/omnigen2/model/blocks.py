"""OmniGen2's building blocks (Lumina2 style): the adaptive RMS norm, the SwiGLU feed-forward, the transformer block
used by the refiners and the main stack, the timestep + caption embedder and the adaptive output norm.

Module and parameter names are the published checkpoint's. Norms are `torch.nn.RMSNorm` (the published CPU path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn

from omnideft.families.omnigen2.model.attention import OmniGen2Attention

FREQUENCY_CHANNELS = 256
MAX_CONDITION_DIM = 1024  # the timestep embedding (and every adaLN input) is min(hidden, 1024) wide


class AdaRMSNormZero(nn.Module):
    """RMS norm scaled by (1 + scale) from the timestep embedding; also returns the attention gate and the MLP
    scale and gate (`norm1` of a modulated block)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(min(dim, MAX_CONDITION_DIM), 4 * dim, bias=True)
        self.norm = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, temb: torch.Tensor):
        scale_msa, gate_msa, scale_mlp, gate_mlp = self.linear(self.silu(temb)).chunk(4, dim=1)
        return self.norm(x) * (1 + scale_msa[:, None]), gate_msa, scale_mlp, gate_mlp


class SwiGLUFeedForward(nn.Module):
    """linear_2(silu(linear_1 x) * linear_3 x); the inner width is 4*dim (times the multiplier) rounded up to a
    multiple of `multiple_of`, as Lumina2 sizes it."""

    def __init__(self, dim: int, multiple_of: int, ffn_dim_multiplier: float | None):
        super().__init__()
        inner = 4 * dim
        if ffn_dim_multiplier is not None:
            inner = int(ffn_dim_multiplier * inner)
        inner = multiple_of * ((inner + multiple_of - 1) // multiple_of)
        self.linear_1 = nn.Linear(dim, inner, bias=False)
        self.linear_2 = nn.Linear(inner, dim, bias=False)
        self.linear_3 = nn.Linear(dim, inner, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.silu(self.linear_1(x).float()).to(x.dtype)  # silu in fp32 under half precision
        return self.linear_2(gate * self.linear_3(x))


class OmniGen2Block(nn.Module):
    """Pre- and post-normed attention and feed-forward; `modulation` makes the norms timestep-adaptive with tanh
    gates (noise and reference refiners, main layers); the caption refiner has none."""

    def __init__(self, dim: int, heads: int, kv_heads: int, multiple_of: int, ffn_dim_multiplier: float | None,
                 eps: float, modulation: bool):
        super().__init__()
        self.modulation = modulation
        self.attn = OmniGen2Attention(dim, heads, kv_heads)
        self.feed_forward = SwiGLUFeedForward(dim, multiple_of, ffn_dim_multiplier)
        self.norm1 = AdaRMSNormZero(dim, eps) if modulation else nn.RMSNorm(dim, eps=eps)
        self.ffn_norm1 = nn.RMSNorm(dim, eps=eps)
        self.norm2 = nn.RMSNorm(dim, eps=eps)
        self.ffn_norm2 = nn.RMSNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, rot: torch.Tensor | None,
                temb: torch.Tensor | None = None) -> torch.Tensor:
        if not self.modulation:
            x = x + self.norm2(self.attn(self.norm1(x), key_mask, rot))
            return x + self.ffn_norm2(self.feed_forward(self.ffn_norm1(x)))
        normed, gate_msa, scale_mlp, gate_mlp = self.norm1(x, temb)
        x = x + gate_msa.unsqueeze(1).tanh() * self.norm2(self.attn(normed, key_mask, rot))
        mlp = self.feed_forward(self.ffn_norm1(x) * (1 + scale_mlp.unsqueeze(1)))
        return x + gate_mlp.unsqueeze(1).tanh() * self.ffn_norm2(mlp)


class TimestepCaptionEmbedding(nn.Module):
    """Timestep -> sinusoid (256, cos first) -> MLP of width min(hidden, 1024); MLLM hidden states -> RMS norm ->
    linear to the transformer width."""

    def __init__(self, hidden_size: int, text_feat_dim: int, eps: float, timestep_scale: float):
        super().__init__()
        self.time_proj = Timesteps(FREQUENCY_CHANNELS, flip_sin_to_cos=True, downscale_freq_shift=0.0,
                                   scale=timestep_scale)
        self.timestep_embedder = TimestepEmbedding(FREQUENCY_CHANNELS, min(hidden_size, MAX_CONDITION_DIM))
        self.caption_embedder = nn.Sequential(nn.RMSNorm(text_feat_dim, eps=eps),
                                              nn.Linear(text_feat_dim, hidden_size, bias=True))

    def forward(self, timestep: torch.Tensor, text: torch.Tensor, dtype: torch.dtype):
        return self.timestep_embedder(self.time_proj(timestep).to(dtype)), self.caption_embedder(text)


class AdaLayerNormOut(nn.Module):
    """Final norm: affine-free LayerNorm scaled by (1 + linear_1(silu(temb))), then linear_2 to patch pixels."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear_1 = nn.Linear(min(dim, MAX_CONDITION_DIM), dim, bias=True)
        self.norm = nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False, bias=True)
        self.linear_2 = nn.Linear(dim, out_dim, bias=True)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale = self.linear_1(self.silu(temb).to(x.dtype))
        return self.linear_2(self.norm(x) * (1 + scale)[:, None, :])
