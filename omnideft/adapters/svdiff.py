"""SVDiff (Han et al., ICCV 2023): frozen SVD of each weight, train only the spectral shift d:
W' = U diag(relu(sigma + d)) Vh. Init `identity`: d = 0; `paper`: d = 1e-3. Math in spectral.py."""

from __future__ import annotations

from omnideft.adapters.spectral import AdapterModel, inject_spectral


def inject(transformer, spec, targets: list[str], adapter_name: str = "default") -> AdapterModel:
    inject_spectral(transformer, targets, "svdiff", init=spec.init)
    return AdapterModel(transformer, "svdiff", targets)


def trainable_groups(name: str) -> str:
    return "spectrum"
