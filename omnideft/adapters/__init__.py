"""Adapters: one file per method, a registry, injection (PEFT or own), the fused DEFT layer, the contract-2 folder,
the optimizer, LoRA export and composition."""

from omnideft.adapters.apply import AdapterSpec, apply_adapter, param_groups
from omnideft.adapters.fingerprint import base_fingerprint
from omnideft.adapters.folder import load_adapter, read_adapter_meta, read_extra_tensors, save_adapter
from omnideft.adapters.optim import build_optimizer, requires_plain_optimizer
from omnideft.adapters.registry import METHODS

__all__ = ["AdapterSpec", "apply_adapter", "param_groups", "load_adapter", "save_adapter", "read_adapter_meta",
           "read_extra_tensors", "base_fingerprint", "build_optimizer", "requires_plain_optimizer", "METHODS"]
