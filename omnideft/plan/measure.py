"""Measured memory of one training step on this machine, to hold the planner to: the bytes autograd saves for
backward (`torch.autograd.graph.saved_tensors_hooks`, each storage once, parameters excluded), the parameters and
buffers, the gradients and AdamW's state after one step. Runs width-reduced OmniGens on the CPU (tests/test_plan.py,
benchmarks/plan_accuracy.py)."""

from __future__ import annotations

from contextlib import contextmanager

import torch

from omnideft.adapters.fingerprint import adapter_tensor
from omnideft.model.quantize import quantize_base
from omnideft.plan.estimate import Setup, Workload, measured_parts
from omnideft.plan.shapes import measure_shapes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def reduced_config(hidden: int = 128, heads: int = 4, layers: int = 2, intermediate: int = 256) -> dict:
    from omnideft.model.tiny import omnigen_config

    return omnigen_config(hidden, heads, layers, intermediate, vocab_size=256, time_step_dim=64, pos_embed_max_size=32)


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


def measure_step(config: dict, spec, setup: Setup, text_tokens: int, input_images: int, latent_side: int,
                 batch: int = 1, seed: int = 0) -> dict:
    """One forward/backward/AdamW step of the model `config` with adapter `spec`: measured bytes by part, and the
    plan's prediction of the same parts (`predicted`)."""
    from diffusers import OmniGenTransformer2DModel

    from omnideft.families.omnigen.targets import target_modules
    from omnideft.model.tiny import tiny_vae_config

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = adapted_for_step(OmniGenTransformer2DModel(**config), spec, setup, target_modules)
        per_image = (latent_side // 2) ** 2
        text_len = text_tokens + input_images * per_image
        seq = text_len + 1 + per_image
        ids = torch.randint(3, config["vocab_size"], (batch, text_len))
        spans = {b: [[text_tokens + k * per_image, text_tokens + (k + 1) * per_image] for k in range(input_images)]
                 for b in range(batch)}
        latents = [torch.randn(1, 4, latent_side, latent_side) for _ in range(batch * input_images)]
        x = torch.randn(batch, 4, latent_side, latent_side)
        mask = torch.ones(batch, seq, seq)
        positions = torch.arange(seq).expand(batch, seq)
        with saved_tensor_bytes(model) as saved, autocast_for(setup):
            out = model(hidden_states=x, timestep=torch.rand(batch), input_ids=ids, input_img_latents=latents,
                        input_image_sizes=spans, attention_mask=mask, position_ids=positions, return_dict=False)[0]
        measured = step_bytes(model, out, saved)
    shapes = measure_shapes(config, tiny_vae_config(), spec)
    work = Workload(batch=batch, input_images=input_images, text_tokens=text_tokens, image_size=latent_side * 8)
    predicted = measured_parts(shapes, setup, work, spec.rank, seq, per_image)
    return {"seq_len": seq, "measured": measured, "predicted": predicted}
