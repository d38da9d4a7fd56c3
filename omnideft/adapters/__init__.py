"""Adapters: one file per method (config building), a registry, PEFT injection, the contract-2 folder."""

from omnideft.adapters.apply import AdapterSpec, apply_adapter
from omnideft.adapters.fingerprint import base_fingerprint
from omnideft.adapters.folder import load_adapter, save_adapter
from omnideft.adapters.registry import METHODS

__all__ = ["AdapterSpec", "apply_adapter", "load_adapter", "save_adapter", "base_fingerprint", "METHODS"]
