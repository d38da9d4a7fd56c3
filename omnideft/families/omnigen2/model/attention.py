"""OmniGen2's self-attention: grouped-query heads, RMS-normalised queries and keys, 3-axis RoPE, PyTorch SDPA.

Parameter names are the published checkpoint's (`to_q`, `to_k`, `to_v`, `to_out.0`, `norm_q`, `norm_k`). The query
and key norms are diffusers' RMSNorm, as in the published model (diffusers' `Attention(qk_norm="rms_norm")`; it
rounds differently from torch's in bf16). Keys and values are repeated to the query heads before SDPA, as the
published CPU path does, so the same SDPA kernel runs; no flash-attn or triton is needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.normalization import RMSNorm
from torch import nn

from omnideft.families.omnigen2.model.rope import apply_rotary


class OmniGen2Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_heads: int, eps: float = 1e-5):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, dim // heads
        self.to_q = nn.Linear(dim, heads * self.head_dim, bias=False)
        self.to_k = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.to_v = nn.Linear(dim, kv_heads * self.head_dim, bias=False)
        self.norm_q = RMSNorm(self.head_dim, eps=eps)
        self.norm_k = RMSNorm(self.head_dim, eps=eps)
        self.to_out = nn.ModuleList([nn.Linear(heads * self.head_dim, dim, bias=False), nn.Dropout(0.0)])

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor, rot: torch.Tensor | None) -> torch.Tensor:
        """x [B, S, dim]; key_mask [B, S] bool (True = a real token); rot [B, S, head_dim // 2] complex or None."""
        b, s, _ = x.shape
        q = self.norm_q(self.to_q(x).view(b, s, self.heads, self.head_dim))
        k = self.norm_k(self.to_k(x).view(b, s, self.kv_heads, self.head_dim))
        v = self.to_v(x).view(b, s, self.kv_heads, self.head_dim)
        if rot is not None:
            q, k = apply_rotary(q, rot), apply_rotary(k, rot)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask.bool().view(b, 1, 1, s),
                                             scale=self.head_dim ** -0.5)
        out = out.transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        return self.to_out[1](self.to_out[0](out))
