"""AdapterSpec: what adapter to train, and the recipe's `adapter:` section (every option with its one default, its
help and its allowed values). Light to import (no torch, no PEFT): the recipe validates against it.

The allowed values of the method-specific options live here too; the modules that implement them import them.
"""

from __future__ import annotations

from dataclasses import dataclass

from omnideft.adapters.registry import METHODS
from omnideft.options import option

INITS = ("identity", "paper")
PROJECTORS = ("relu", "qr", "ppt", "relu2", "svd", "tsvd", "lrmf", "nmf", "eigen")  # DEFT/PaRa: projectors.project
PEFT_PROJECTORS = ("relu", "qr")  # what peft.DeftConfig knows: these adapters stay loadable by stock PEFT
SODA_VARIANTS = ("svd", "qr")
SODA_ROTATIONS = ("stiefel", "cayley")
MLLM_TARGETS = ("none", "language")  # a family with a separate MLLM prompt encoder attaches them


@dataclass
class AdapterSpec:
    method: str = option("deft", "adapter method (docs/adapters.md)", tuple(METHODS))
    rank: int = option(32, "adapter rank r (its meaning per method: docs/adapters.md); also the default rank of a "
                       "LoRA export of a dense delta", bounds=">= 1")
    targets: str | list = option("all-linear", "'attn', 'all-linear', or a list of module names/suffixes")
    include_embedders: bool = option(False, "also adapt time-embedding, adaLN and proj_out linears")
    projector: str | None = option(None, f"DEFT/PaRa projector: {' | '.join(PROJECTORS)} (default relu; qr for "
                                   f"para); {' and '.join(PEFT_PROJECTORS)} stay PEFT files")
    alpha: float | None = option(None, "injection scale alpha (scale alpha/r); null = 1 for DEFT, r for LoRA",
                                 bounds="> 0")
    dropout: float = option(0.0, "dropout on the adapter input", bounds="[0, 1)")
    init: str = option("identity", "identity: adapter = base at step 0; paper: random R (DEFT) / spectrum shift "
                       "1e-3 (SODA, SVDiff) as the authors ran it", INITS)
    p_lr_ratio: float = option(0.1, "learning rate of DEFT's P relative to train.lr (authors: 0.1)", bounds=">= 0")
    soda_variant: str = option("svd", "SODA form: svd (tuned singular values) or qr (tuned LQ diagonal)",
                               SODA_VARIANTS)
    soda_rotation: str = option("stiefel", "SODA rotation factors: stiefel (kept orthogonal by the optimizer; not "
                                "under DeepSpeed ZeRO) or cayley (orthogonal by construction, any optimizer)",
                                SODA_ROTATIONS)
    mllm_targets: str = option("none", "families with a separate MLLM prompt encoder only (the others refuse it): "
                               "language = the same method also on the MLLM's language "
                               "layers (q/k/v/o, gate/up/down of every decoder layer; never the vision tower), "
                               "trained with the transformer (docs/models.md)", MLLM_TARGETS)
