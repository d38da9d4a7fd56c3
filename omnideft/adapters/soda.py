"""SODA (Zhang et al., WACV 2025): tuned spectrum + Kronecker-factored orthogonal rotation of the singular basis.

`adapter.soda_variant`: svd (W' = U diag(relu(sigma + d)) Vh K^T) or qr (the LQ form (L + diag d) Q^T K^T).
`adapter.soda_rotation`: stiefel (factors kept orthogonal by optim.StiefelAdam; plain / DDP training only) or
cayley (orthogonal by construction; any optimizer, DeepSpeed ZeRO included). Math in spectral.py.
Init `identity`: d = 0, K = I (W' = W); `paper`: d = 1e-3 as the authors' code (svd variant).
"""

from __future__ import annotations

from omnideft.adapters.spectral import ROTATIONS, VARIANTS, AdapterModel, inject_spectral
from omnideft.errors import UserError


def inject(transformer, spec, targets: list[str], adapter_name: str = "default") -> AdapterModel:
    if spec.soda_variant not in VARIANTS:
        raise UserError(f"adapter.soda_variant {spec.soda_variant!r} is not one of {list(VARIANTS)}")
    if spec.soda_rotation not in ROTATIONS:
        raise UserError(f"adapter.soda_rotation {spec.soda_rotation!r} is not one of {list(ROTATIONS)}")
    inject_spectral(transformer, targets, "soda", spec.soda_variant, spec.soda_rotation, spec.init)
    return AdapterModel(transformer, "soda", targets)


def trainable_groups(name: str) -> str:
    return "rotation" if "soda_rot" in name else "spectrum"
