"""SODA (Zhang et al., WACV 2025): tuned spectrum + Kronecker-factored orthogonal rotation of the singular basis.

`adapter.soda_variant`: svd (W' = U diag(relu(sigma + d)) Vh K^T) or qr (the LQ form (L + diag d) Q^T K^T).
`adapter.soda_rotation`: stiefel (factors kept orthogonal by optim.StiefelAdamW; plain / DDP training only) or
cayley (orthogonal by construction; any optimizer, DeepSpeed ZeRO included). Math in spectral.py.
Init `identity`: d = 0, K = I (W' = W); `paper`: d = 1e-3 as the authors' code (svd variant).
Own injection and own folder config; the delta W' - W is dense (full rank).
"""

from __future__ import annotations

from omnideft.adapters.method import AdapterMethod
from omnideft.adapters.spec import SODA_ROTATIONS, SODA_VARIANTS
from omnideft.adapters.spectral import AdapterModel, SpectralLinear, inject_spectral
from omnideft.errors import UserError


class SODA(AdapterMethod):
    param_prefixes = ("soda_",)

    def inject(self, transformer, spec, targets: list[str], adapter_name: str = "default") -> AdapterModel:
        if spec.soda_variant not in SODA_VARIANTS:
            raise UserError(f"adapter.soda_variant {spec.soda_variant!r} is not one of {list(SODA_VARIANTS)}")
        if spec.soda_rotation not in SODA_ROTATIONS:
            raise UserError(f"adapter.soda_rotation {spec.soda_rotation!r} is not one of {list(SODA_ROTATIONS)}")
        inject_spectral(transformer, targets, "soda", spec.soda_variant, spec.soda_rotation, spec.init)
        return AdapterModel(transformer, "soda", targets)

    def trainable_group(self, param_name: str) -> str:
        return "rotation" if "soda_rot" in param_name else "spectrum"

    def orthogonal_groups(self, spec) -> tuple[str, ...]:
        return ("rotation",) if spec.soda_rotation == "stiefel" else ()

    def zero_refusal(self, spec) -> str | None:
        if self.orthogonal_groups(spec):
            return ("adapter.soda_rotation=stiefel keeps whole rotation matrices orthogonal in the optimizer, which "
                    "DeepSpeed ZeRO partitions; use adapter.soda_rotation=cayley or train without ZeRO")
        return None

    def owns(self, layer) -> bool:
        return isinstance(layer, SpectralLinear) and layer.kind == "soda"

    def layer_delta(self, layer):
        return layer.delta_weight()
