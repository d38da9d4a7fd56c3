"""What the planner knows about a model without its weights: the sizes that follow from its configs, counted on the
meta device (no memory, well under a second for a 4B-parameter model): parameters by kind, the adapted linears and
the adapter's parameters (ModelShapes), and what a model family gives the planner to get them (PlanFamily,
`family.plan_entry()`; each family's configs and counting live in families/<name>/plan.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ModelShapes:
    hidden: int
    intermediate: int
    heads: int
    layers: int
    linear_params: int  # weights of the nn.Linear layers (what int8/fp8/nf4 quantise)
    other_params: int  # embeddings, norms, patch embeddings, biases
    buffers: int  # the fixed 2-D sin-cos position table
    adapter_params: int
    adapted: tuple[tuple[int, int], ...]  # (in_features, out_features) of each adapted linear
    vae_params: int
    method: str  # the adapter method (its per-token activations depend on it)
    # Set by families whose model has them (families/<name>/plan.py):
    kv_heads: int = 0  # grouped-query key/value heads (0: as many as heads)
    refiner_layers: int = 0  # blocks that refine each part of the sequence before `layers`
    # Linear weights whose input carries gradients (what autocast's kept weight casts cover): in the blocks, and
    # outside them (embedders after the first layer, output projection)
    block_linear_params: int = 0
    outside_linear_params: int = 0
    block_adapted: tuple[tuple[int, int], ...] = ()  # the adapted linears of one block, when not adapted[:per layer]
    prompt_encoder_params: int = 0  # a separate frozen prompt encoder (an MLLM)
    prompt_encoder_bytes_per_token: int = 0  # what its no-grad forward holds per text token (hidden states, logits)
    source: str = ""  # where the configs came from, when not the model name itself
    activations: object = None  # the family's activation model (estimate.Activations' interface)

    @property
    def base_params(self) -> int:
        return self.linear_params + self.other_params

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def adapted_per_layer(self) -> int:
        return len(self.adapted) // self.layers


def count_linears(transformer) -> tuple[int, int, int]:
    """(nn.Linear weights, other parameters, buffers) of a transformer, in values."""
    from torch import nn

    linear_weights = {id(m.weight) for m in transformer.modules() if isinstance(m, nn.Linear)}
    params = list(transformer.parameters())
    linear = sum(p.numel() for p in params if id(p) in linear_weights)
    return linear, sum(p.numel() for p in params) - linear, sum(b.numel() for b in transformer.buffers())


def adapted_linears(model):
    """The base linears that carry an adapter: modules with a `base_layer` (PEFT) or an `omnideft_base` (own
    injection) whose weight is frozen and whose children hold trainable parameters."""
    from torch import nn

    out = []
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, nn.Linear) and any(p.requires_grad for p in module.parameters()):
            out.append(base)
    return out


@dataclass(frozen=True)
class PlanFamily:
    """What `omnideft plan` asks a model family for (family.plan_entry()): its component configs for a model name,
    how to count them into ModelShapes (which carry the family's activation model) and the Workload fields it
    fixes."""
    name: str
    configs: Callable[[str], tuple[dict, str]]  # model.name -> (configs by component, where they came from or "")
    count: Callable[[dict, object], ModelShapes]  # (configs, adapter spec) -> sizes, counted on the meta device
    workload: dict = field(default_factory=dict)  # Workload fields the family fixes

    def shapes(self, name: str, spec) -> ModelShapes:
        configs, source = self.configs(name)
        return dataclasses.replace(self.count(configs, spec), source=source)
