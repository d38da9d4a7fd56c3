"""Storage of the frozen base transformer under a full-precision adapter (`model.quantize`, docs/memory.md):

- bf16: a cast (half the fp32 bytes; the residual stream then runs in bf16 too);
- int8, fp8: weight-only quantisation of every nn.Linear with optimum-quanto (per-output-row scales; runs on CPU and
  GPU; the matmul dequantises to bf16). optimum-quanto rather than torchao: both run here, quanto is what SimpleTuner
  and ai-toolkit quantise OmniGen-class bases with, and it imports without torchao's CUDA-extension noise on CPU;
- nf4: bitsandbytes' 4-bit NormalFloat layers, CUDA only.

Embeddings, norms and the patch embeddings stay in bf16. `dense_weight` gives any of these layers' weight back as a
plain tensor, which is all the fused DEFT/PaRa layer (adapters/fast_deft.py) needs from a quantised base layer.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from omnideft.errors import UserError

QUANTIZATIONS = ("bf16", "int8", "fp8", "nf4")


def check_quantization(kind: str | None) -> None:
    """Refuse what cannot run here before anything loads or is written."""
    if kind is None:
        return
    if kind not in QUANTIZATIONS:
        raise UserError(f"model.quantize {kind!r} is not one of {', '.join(QUANTIZATIONS)}")
    if kind == "nf4" and not torch.cuda.is_available():
        raise UserError("model.quantize=nf4 needs a CUDA GPU (bitsandbytes); on this machine use int8 or fp8")


def quantize_base(transformer: nn.Module, kind: str, exclude: re.Pattern | None = None) -> nn.Module:
    """Quantise the frozen base weights of `transformer` in place; returns it. With an adapter already injected,
    `exclude` matches the names of its parameters and modules (they stay as they are, e.g. LoRA's own nn.Linear)."""
    check_quantization(kind)
    skip = (lambda name: bool(exclude.search(name))) if exclude is not None else (lambda name: False)
    for name, tensor in [*transformer.named_parameters(), *transformer.named_buffers()]:
        if not skip(name) and tensor.is_floating_point():
            tensor.data = tensor.data.to(torch.bfloat16)
    linears = [name for name, m in transformer.named_modules() if type(m) is nn.Linear and not skip(name)]
    if kind in ("int8", "fp8"):
        from optimum.quanto import freeze, qfloat8, qint8, quantize

        quantize(transformer, weights=qint8 if kind == "int8" else qfloat8, include=linears)
        freeze(transformer)
    elif kind == "nf4":
        _to_nf4(transformer, linears)
    for name, param in transformer.named_parameters():
        if not skip(name):
            param.requires_grad_(False)  # quanto's frozen layers come back with trainable parameters
    return transformer


def _to_nf4(transformer: nn.Module, names: list[str]) -> None:
    """Every listed nn.Linear becomes a bitsandbytes Linear4bit (nf4, bf16 compute), quantised on the GPU."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise UserError("model.quantize=nf4 needs bitsandbytes: pip install bitsandbytes") from None
    device = torch.device("cuda", torch.cuda.current_device())
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = transformer.get_submodule(parent_name) if parent_name else transformer
        old = getattr(parent, child)
        new = bnb.nn.Linear4bit(old.in_features, old.out_features, bias=old.bias is not None,
                                compute_dtype=torch.bfloat16, quant_type="nf4", device="meta")
        new.weight = bnb.nn.Params4bit(old.weight.data.to("cpu"), requires_grad=False, quant_type="nf4")
        if old.bias is not None:
            new.bias = nn.Parameter(old.bias.data, requires_grad=False)
        setattr(parent, child, new.to(device))  # moving to CUDA quantises


def is_quantized(weight: torch.Tensor) -> bool:
    """A bitsandbytes 4-bit parameter or a tensor subclass that dequantizes (optimum-quanto's); plain tensors have a
    `dequantize` method too (for torch's own quantized dtypes), hence the type check."""
    if hasattr(weight, "quant_state"):
        return True
    return callable(getattr(weight, "dequantize", None)) and type(weight) not in (torch.Tensor, nn.Parameter)


def dense_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A linear layer's weight as a plain [out, in] tensor of `dtype`: dequantised when quantised (a transient copy
    of one layer), else cast."""
    quant_state = getattr(weight, "quant_state", None)
    if quant_state is not None:  # bitsandbytes 4-bit
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(weight.data, quant_state).to(dtype)
    if is_quantized(weight):  # optimum-quanto (and other tensor subclasses that dequantize)
        return weight.dequantize().to(dtype)
    return weight.to(dtype)
