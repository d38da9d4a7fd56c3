"""The adapter-method interface, written down once: everything omnideft needs to know about a method.

A method is one file with a subclass of AdapterMethod (PeftMethod when PEFT injects it) plus one line in
registry.py. The rest of omnideft only asks these attributes:

  name                 the recipe's `adapter.method` (given by the registry); title its name in reports (LoRA)
  param_prefixes       how its tensor names start (`lora_`): the base fingerprint skips them
  inject               how it adapts the transformer: a PEFT config (PeftMethod.peft_config) or its own injection
  trainable_group      the optimizer group of each trainable parameter, and lr_ratio its learning rate / train.lr
  orthogonal_groups    optimizer needs: groups of square matrices StiefelAdamW keeps orthogonal
  zero_refusal         why DeepSpeed ZeRO cannot train it (None: it can)
  before_zero3         what the injected model needs before ZeRO-3 partitions it (DEFT: base biases it reads)
  peft_native          whether stock PEFT loads its folder (else omnideft's own adapter_config.json);
                       after_peft_load adjusts a model stock PEFT loaded (DEFT: its fused layers)
  identity_init        whether `init: identity` makes the adapted model equal the base at step 0
  owns / layer_delta   per adapted layer, the exact change of its weight: LoRA factors (B, A) or a dense delta

An adapted layer is a module with a `base_layer` (PEFT's tuner layers and omnideft's own both wrap the original
nn.Linear so); export and composition refuse one that no method owns or that its method cannot express.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from peft import get_peft_model
from torch import nn

from omnideft.errors import UserError

Delta = tuple[torch.Tensor, torch.Tensor] | torch.Tensor  # (B, A) with delta W = B A, or a dense delta W


class AdapterMethod(ABC):
    param_prefixes: tuple[str, ...] = ()
    identity_init: bool = True
    title: str = ""  # as papers write it; empty = the name in capitals

    def __init__(self, name: str):
        self.name = name
        self.title = self.title or name.upper()

    @abstractmethod
    def inject(self, transformer: nn.Module, spec, targets: list[str], adapter_name: str) -> nn.Module:
        """Adapt the nn.Linear modules named `targets` in place and freeze everything else. Returns a wrapper with
        get_base_model(), unload() and merge_and_unload(): a PeftModel, or spectral.AdapterModel."""

    @abstractmethod
    def trainable_group(self, param_name: str) -> str:
        """The optimizer group of a trainable parameter (DEFT: "P" or "R")."""

    def lr_ratio(self, group: str, spec) -> float:
        """The learning rate of `group` relative to train.lr."""
        return 1.0

    def orthogonal_groups(self, spec) -> tuple[str, ...]:
        """Groups of square matrices the optimizer must keep orthogonal (optim.StiefelAdamW); () = plain AdamW."""
        return ()

    def zero_refusal(self, spec) -> str | None:
        """Why DeepSpeed ZeRO cannot train this adapter (one line naming the recipe key to change), or None."""
        return None

    def before_zero3(self, model: nn.Module) -> None:
        """Called on the injected model before DeepSpeed ZeRO-3 partitions it (e.g. to register parameters that a
        layer reads outside their own module's forward)."""

    def peft_native(self, spec) -> bool:
        """True when the saved folder is PEFT's own (stock `PeftModel.from_pretrained` loads it)."""
        return False

    def after_peft_load(self, model: nn.Module) -> None:
        """Called on every model stock PEFT loaded from a folder, whatever its method (so: a no-op on others)."""

    @abstractmethod
    def owns(self, layer: nn.Module) -> bool:
        """Whether `layer`, a module of the base transformer, is an adapted layer of this method."""

    @abstractmethod
    def layer_delta(self, layer: nn.Module) -> Delta:
        """The exact change of an owned layer's weight on its unmerged base weight, fp32: LoRA factors (B, A) with
        delta W = B A, or the dense delta W' - W. Raises UserError (the reason) when it cannot be expressed."""


class PeftMethod(AdapterMethod):
    """A method PEFT injects from a config; its folders are PEFT's own unless peft_native says otherwise."""

    @abstractmethod
    def peft_config(self, spec, targets: list[str]):
        """The peft config that adapts `targets` as `spec` says."""

    def after_inject(self, model: nn.Module, spec, adapter_name: str) -> None:
        """Adjust the injected layers (DEFT swaps in its fused layer)."""

    def inject(self, transformer, spec, targets, adapter_name):
        model = get_peft_model(transformer, self.peft_config(spec, targets), adapter_name=adapter_name)
        self.after_inject(model, spec, adapter_name)
        return model

    def peft_native(self, spec) -> bool:
        return True


def active_adapter(layer: nn.Module, adapters) -> str:
    """The one active adapter of a PEFT tuner layer among `adapters` (its parameter dict); export needs it unmerged."""
    if layer.merged:
        raise UserError("its adapter is merged into the weight")
    names = [a for a in layer.active_adapters if a in adapters]
    if len(names) != 1:
        raise UserError(f"{len(names)} of its adapters are active; a delta needs exactly one")
    return names[0]
