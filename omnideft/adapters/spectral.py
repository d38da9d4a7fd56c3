"""Spectral adapters (SODA, SVDiff): math of the layer, injection, and the model wrapper that holds them.

From a one-time fp32 decomposition of each frozen weight W (out x in), k = min(out, in):

  svdiff    W' = U diag(relu(sigma + d)) Vh                                  trains d (k)
  soda/svd  W' = U diag(relu(sigma + d)) Vh K^T,  K = K_1 (x) K_2 (x) K_3    trains d and the rotation K (in x in)
  soda/qr   W' = (L + diag d) Q^T K^T with W = L Q^T (LQ: Q from the QR of W^T)

K rotates the input (right-singular) side as in the paper's code; its Kronecker factor sizes are chosen for any
width (kron_sizes). K's factors are either kept orthogonal by the optimizer (`stiefel`, optim.StiefelAdam: plain
single-process / DDP only) or are skew generators A mapped through the Cayley transform (I - A)^-1 (I + A)
(`cayley`: orthogonal by construction, so any optimizer - also DeepSpeed ZeRO's flattened AdamW - trains them).
U, sigma, Vh (or L, Q) are non-persistent buffers recomputed from W on load; only d and the factors are saved.
The forward works on activations: x -> x K -> Vh -> scale -> U, never building W'.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def kron_sizes(n: int, factors: int = 3) -> tuple[int, ...]:
    """Factor n into `factors` sizes with the smallest sum of squares (fewest rotation parameters)."""
    best: tuple[int, ...] | None = None

    def search(rest: int, left: int, lo: int, acc: tuple[int, ...]):
        nonlocal best
        if left == 1:
            if rest >= lo:
                cand = (*acc, rest)
                if best is None or sum(a * a for a in cand) < sum(b * b for b in best):
                    best = cand
            return
        for a in range(lo, int(round(rest ** (1 / left))) + 1):
            if rest % a == 0:
                search(rest // a, left - 1, a, (*acc, a))

    search(n, factors, 1, ())
    return best


def kron_apply(x: torch.Tensor, mats: list[torch.Tensor]) -> torch.Tensor:
    """x @ (M_1 (x) M_2 (x) M_3) over the last dim, without building the Kronecker product."""
    shape = x.shape
    a, b, c = (m.shape[0] for m in mats)
    z = x.reshape(-1, a, b, c)
    z = torch.einsum("nijk,ia->najk", z, mats[0])
    z = torch.einsum("najk,jb->nabk", z, mats[1])
    z = torch.einsum("nabk,kc->nabc", z, mats[2])
    return z.reshape(shape)


def cayley(a: torch.Tensor) -> torch.Tensor:
    skew = a - a.T
    eye = torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    return torch.linalg.solve(eye - skew, eye + skew)


class SpectralLinear(nn.Module):
    def __init__(self, base_layer: nn.Linear, kind: str, variant: str = "svd", rotation: str = "stiefel",
                 init: str = "identity"):
        super().__init__()
        self.base_layer = base_layer
        self.kind, self.variant, self.rotation = kind, variant, rotation
        self.in_features, self.out_features = base_layer.in_features, base_layer.out_features
        k = min(self.in_features, self.out_features)
        prefix = "svdiff" if kind == "svdiff" else "soda"
        self.prefix = prefix
        shift = torch.zeros(k) if (init == "identity" or variant == "qr") else torch.full((k,), 1e-3)
        setattr(self, f"{prefix}_shift", nn.Parameter(shift))
        if kind == "soda":
            self.sizes = kron_sizes(self.in_features)
            fill = torch.eye if rotation == "stiefel" else (lambda n: torch.zeros(n, n))
            self.soda_rot = nn.ParameterList([nn.Parameter(fill(n)) for n in self.sizes])
        self.decompose()

    @property
    def shift(self) -> nn.Parameter:
        return getattr(self, f"{self.prefix}_shift")

    @torch.no_grad()
    def decompose(self) -> None:
        w = self.base_layer.weight.detach().float()
        if self.variant == "qr":
            q, r = torch.linalg.qr(w.T)  # W^T = Q R  ->  W = R^T Q^T = L Q^T
            left, sigma, right = r.T, None, q  # right: in x k
        else:
            u, s, vh = torch.linalg.svd(w, full_matrices=False)
            left, sigma, right = u, s, vh.T
        dtype = self.base_layer.weight.dtype
        self.register_buffer("left", left.to(dtype), persistent=False)
        self.register_buffer("right", right.to(dtype), persistent=False)
        self.register_buffer("sigma", sigma.float() if sigma is not None else None, persistent=False)

    def _diag(self, d: torch.Tensor) -> torch.Tensor:
        return F.pad(torch.diag(d), (0, 0, 0, self.out_features - d.shape[0]))  # k x k diagonal on top of out x k

    def rotations(self) -> list[torch.Tensor]:
        mats = [p.float() for p in self.soda_rot]
        return [cayley(m) for m in mats] if self.rotation == "cayley" else mats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self.left.dtype
        x = x.to(dt)
        if self.kind == "soda":
            x = kron_apply(x, [m.to(dt) for m in self.rotations()])
        z = x @ self.right  # (.., k)
        if self.variant == "qr":
            left = self.left + self._diag(self.shift.to(dt))  # (L + diag d): out x k
        else:
            z = z * torch.relu(self.sigma + self.shift.float()).to(dt)
            left = self.left
        h = z @ left.T
        if self.base_layer.bias is not None:
            h = h + self.base_layer.bias
        return h

    @torch.no_grad()
    def merged_weight(self) -> torch.Tensor:
        """W' (fp32), the exact adapted weight."""
        right = self.right.float()
        if self.kind == "soda":  # (x K) right = x (K right), and (K right)^T = right^T K^T
            right = kron_apply(right.T.contiguous(), [m.T for m in self.rotations()]).T
        if self.variant == "qr":
            left = self.left.float() + self._diag(self.shift.float())
            return left @ right.T
        return (self.left.float() * torch.relu(self.sigma + self.shift.float())) @ right.T

    @torch.no_grad()
    def delta_weight(self) -> torch.Tensor:
        """W' - W (fp32): dense, full rank in general."""
        return self.merged_weight() - self.base_layer.weight.float()

    def orthogonality_error(self) -> float:
        with torch.no_grad():
            return max(float((m.T @ m - torch.eye(m.shape[0])).abs().max()) for m in self.rotations())


class AdapterModel(nn.Module):
    """The transformer with SpectralLinear layers; what apply_adapter returns for soda/svdiff.

    Mirrors the bits of PeftModel the project uses: get_base_model(), merge_and_unload(), unload(), attribute
    fall-through to the transformer (config, dtype, ...)."""

    def __init__(self, transformer: nn.Module, method: str, targets: list[str]):
        super().__init__()
        self.base_model = transformer
        self.method = method
        self.targets = list(targets)

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.base_model, name)

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def adapter_layers(self):
        return [(n, m) for n, m in self.base_model.named_modules() if isinstance(m, SpectralLinear)]

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v.detach() for n, m in self.adapter_layers() for k, v in m.named_parameters()
                if not k.startswith("base_layer.")}

    def load_adapter_state_dict(self, sd: dict[str, torch.Tensor]) -> None:
        want = self.adapter_state_dict()
        if set(sd) != set(want):
            missing, extra = sorted(set(want) - set(sd)), sorted(set(sd) - set(want))
            raise ValueError(f"adapter tensors do not match the model (missing {missing[:2]}, unexpected {extra[:2]})")
        params = dict(self.base_model.named_parameters())
        with torch.no_grad():
            for k, v in sd.items():
                if params[k].shape != v.shape:
                    raise ValueError(f"adapter tensor {k} has shape {tuple(v.shape)}, model {tuple(params[k].shape)}")
                params[k].copy_(v)

    def unload(self, merge: bool = False) -> nn.Module:
        for name, layer in self.adapter_layers():
            parent_name, _, child = name.rpartition(".")
            parent = self.base_model.get_submodule(parent_name) if parent_name else self.base_model
            base = layer.base_layer
            if merge:
                with torch.no_grad():
                    base.weight.copy_(layer.merged_weight().to(base.weight.dtype))
            setattr(parent, child, base)
        return self.base_model

    def merge_and_unload(self) -> nn.Module:
        return self.unload(merge=True)


def inject_spectral(transformer: nn.Module, targets: list[str], kind: str, variant: str = "svd",
                    rotation: str = "stiefel", init: str = "identity") -> None:
    for p in transformer.parameters():
        p.requires_grad_(False)
    for name in targets:
        parent_name, _, child = name.rpartition(".")
        parent = transformer.get_submodule(parent_name) if parent_name else transformer
        base = getattr(parent, child)
        setattr(parent, child, SpectralLinear(base, kind, variant, rotation, init))

