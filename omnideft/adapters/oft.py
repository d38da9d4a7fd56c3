"""OFT (Qiu et al., NeurIPS 2023) through PEFT: the input of each layer is rotated by a block-diagonal orthogonal
matrix R = diag(R_1 .. R_r), R_i = Cayley(skew(Q_i)), so h = W (x R) and W' = W R^T; the baseline the SODA paper
compares with.

`adapter.rank` is PEFT's OFT `r`: the number of blocks (block size in_features / r; PEFT adjusts r to a divisor
of in_features). The exact Cayley transform is used (`use_cayley_neumann=False`, as in the paper: R stays
orthogonal) instead of PEFT's truncated Neumann series. Q = 0 at init, so R = I and W' = W (the authors' init:
`init: paper` is the same); `dropout` is PEFT's multiplicative block dropout. PEFT's own files. The delta
W R^T - W is dense (full rank in general).
"""

from __future__ import annotations

from peft import OFTConfig
from peft.tuners.oft.layer import Linear as OFTLinear

from omnideft.adapters.method import PeftMethod, active_adapter


class OFT(PeftMethod):
    param_prefixes = ("oft_",)

    def peft_config(self, spec, targets: list[str]) -> OFTConfig:
        return OFTConfig(r=spec.rank, oft_block_size=0, module_dropout=spec.dropout, use_cayley_neumann=False,
                         init_weights=True, target_modules=targets)

    def trainable_group(self, param_name: str) -> str:
        return "oft"

    def owns(self, layer) -> bool:
        return isinstance(layer, OFTLinear)

    def layer_delta(self, layer):
        adapter = active_adapter(layer, layer.oft_R)
        rotation = layer.get_delta_weight(adapter).float()  # PEFT's name; it is R, the in x in block-diagonal rotation
        weight = layer.get_base_layer().weight.float()
        return weight @ rotation.T - weight
