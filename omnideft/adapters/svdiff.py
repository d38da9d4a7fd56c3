"""SVDiff (Han et al., ICCV 2023): frozen SVD of each weight, train only the spectral shift d:
W' = U diag(relu(sigma + d)) Vh. Init `identity`: d = 0; `paper`: d = 1e-3. Math in spectral.py.
Own injection and own folder config; the delta W' - W is dense (full rank)."""

from __future__ import annotations

from omnideft.adapters.method import AdapterMethod
from omnideft.adapters.spectral import AdapterModel, SpectralLinear, inject_spectral


class SVDiff(AdapterMethod):
    title = "SVDiff"
    param_prefixes = ("svdiff_",)

    def inject(self, transformer, spec, targets: list[str], adapter_name: str = "default") -> AdapterModel:
        inject_spectral(transformer, targets, "svdiff", init=spec.init)
        return AdapterModel(transformer, "svdiff", targets)

    def trainable_group(self, param_name: str) -> str:
        return "spectrum"

    def owns(self, layer) -> bool:
        return isinstance(layer, SpectralLinear) and layer.kind == "svdiff"

    def layer_delta(self, layer):
        return layer.delta_weight()
