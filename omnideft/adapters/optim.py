"""The adapter optimizer: AdamW over param_groups, with a Stiefel (Cayley) Adam step for the groups a method keeps
orthogonal (AdapterMethod.orthogonal_groups: SODA's rotation factors).

Those groups hold square factors X kept orthogonal: the gradient is taken to the Lie algebra
(xi = skew(X^T G)), the Adam moments live there (no vector transport needed) and the step is
X <- X cayley(-lr m / (sqrt(v) + eps)), an exact rotation, followed by one Newton-Schulz polish
X <- X (3I - X^T X) / 2 against round-off drift. Every other group gets plain AdamW. The rotation step needs whole
matrices, so it cannot run on DeepSpeed ZeRO's flattened fp32 partitions: requires_plain_optimizer() gives the
trainer the method's one-line reason to refuse (AdapterMethod.zero_refusal; for SODA, `adapter.soda_rotation:
cayley` is the ZeRO-safe alternative, orthogonal by construction and trained by plain AdamW).
"""

from __future__ import annotations

import torch

from omnideft.adapters.apply import param_groups
from omnideft.adapters.registry import get_method


class StiefelAdamW(torch.optim.Optimizer):
    """AdamW, with the Stiefel step for the groups named in `orthogonal`."""

    def __init__(self, params, orthogonal: tuple[str, ...], lr: float = 1e-3, betas=(0.9, 0.99), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.orthogonal = tuple(orthogonal)  # not a group key: loading an optimizer state keeps it

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            stiefel = group.get("name") in self.orthogonal
            b1, b2 = group["betas"]
            for x in group["params"]:
                if x.grad is None:
                    continue
                g = x.grad.float()
                xf = x.float()
                if stiefel:
                    g = xf.T @ g
                    g = (g - g.T) / 2  # Riemannian gradient, left-trivialised: d/dt f(X exp(t xi))
                st = self.state[x]
                if not st:
                    st["step"] = torch.zeros(())
                    st["exp_avg"] = torch.zeros_like(xf)
                    st["exp_avg_sq"] = torch.zeros_like(xf)
                st["step"] += 1
                n = float(st["step"])
                st["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
                st["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)  # symmetric for skew g: the step stays skew
                update = (st["exp_avg"] / (1 - b1**n)) / ((st["exp_avg_sq"] / (1 - b2**n)).sqrt() + group["eps"])
                if stiefel:
                    eye = torch.eye(xf.shape[0], dtype=xf.dtype, device=xf.device)
                    omega = -group["lr"] * update
                    xf = xf @ torch.linalg.solve(eye - omega / 2, eye + omega / 2)  # Cayley: exactly orthogonal
                    xf = xf @ (3 * eye - xf.T @ xf) / 2
                else:
                    xf = xf * (1 - group["lr"] * group["weight_decay"]) - group["lr"] * update
                x.copy_(xf)
        return loss


def requires_plain_optimizer(spec) -> str | None:
    """Why this adapter cannot train under DeepSpeed ZeRO (a one-line reason), or None when it can."""
    return get_method(spec.method).zero_refusal(spec)


def build_optimizer(model, spec, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.99)) -> torch.optim.Optimizer:
    """AdamW over param_groups(model, spec, ...); StiefelAdamW when the method keeps some groups orthogonal."""
    groups = param_groups(model, spec, lr, weight_decay)
    orthogonal = [g["name"] for g in groups if g["name"] in get_method(spec.method).orthogonal_groups(spec)]
    if orthogonal:
        for g in groups:
            if g["name"] in orthogonal:
                g["weight_decay"] = 0.0
        return StiefelAdamW(groups, orthogonal, betas=tuple(betas))
    return torch.optim.AdamW(groups, betas=tuple(betas))
