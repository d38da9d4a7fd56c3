"""Measured memory of one training step on this machine, to hold the planner to: the bytes autograd saves for
backward (`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded), the parameters and
buffers, the gradients and AdamW's state after one step: the parts every family shares. Each family's
`measure_step` (families/<name>/plan.py) runs its width-reduced model on the CPU with them (tests/test_plan.py,
benchmarks/plan_accuracy.py)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from omnideft.adapters.fingerprint import adapter_tensor
from omnideft.model.quantize import quantize_base
from omnideft.sizing.estimate import Setup

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _storage_bytes(tensors) -> dict[int, int]:
    """data pointer -> bytes of every storage behind `tensors`; a quantised weight (optimum-quanto) counts its
    int8/fp8 data and its scales."""
    out = {}
    for t in tensors:
        for inner in (getattr(t, "_data", None), getattr(t, "_scale", None)) if hasattr(t, "_data") else (t,):
            out[inner.untyped_storage().data_ptr()] = inner.untyped_storage().nbytes()
    return out


def autocast_for(setup: Setup):
    return torch.autocast("cpu", DTYPES[setup.compute], enabled=setup.compute != "fp32")


@contextmanager
def saved_tensor_bytes(model):
    """Within: every storage autograd saves for backward that is not one of `model`'s parameters or buffers is
    counted once in the yielded {data pointer: bytes}."""
    skip = set(_storage_bytes([*model.parameters(), *model.buffers()]))
    saved: dict[int, int] = {}

    def pack(t):
        for ptr, nbytes in _storage_bytes([t]).items():
            if ptr not in skip and ptr not in saved:
                saved[ptr] = nbytes
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield saved


def step_bytes(model, out: torch.Tensor, saved: dict[int, int]) -> dict:
    """Backward of a loss on `out` and one AdamW step of the trainable parameters, then the measured bytes by part:
    saved tensors, parameters and buffers, gradients, optimizer state."""
    saved_bytes = sum(saved.values())
    out.float().pow(2).mean().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    optimizer.step()
    return {
        "saved": saved_bytes,
        "params": sum(_storage_bytes([*model.parameters(), *model.buffers()]).values()),
        "grads": sum(p.grad.untyped_storage().nbytes() for p in trainable),
        "optimizer": sum(v.untyped_storage().nbytes() for state in optimizer.state.values()
                         for v in state.values() if torch.is_tensor(v) and v.dim() > 0),
    }


def adapted_for_step(transformer, spec, setup: Setup, targets):
    """`transformer` as the trainer adapts it (train/setup.py): frozen, the adapter injected, then the base stored as
    `setup.base` (the adapter stays fp32) and gradient checkpointing as `setup` says; in train mode."""
    from omnideft.adapters import apply_adapter

    transformer.requires_grad_(False)
    model = apply_adapter(transformer, spec, targets=targets)
    if setup.base != "fp32":
        quantize_base(transformer, setup.base, exclude=adapter_tensor())
    if setup.checkpointing:
        transformer.enable_gradient_checkpointing()
    model.train()
    return model


