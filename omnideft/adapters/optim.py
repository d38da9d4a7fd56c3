"""The adapter optimizer: AdamW over param_groups, with a Stiefel (Cayley) Adam step for SODA's rotation factors.

Groups named `rotation` hold square factors X kept orthogonal: the gradient is taken to the Lie algebra
(xi = skew(X^T G)), the Adam moments live there (no vector transport needed) and the step is
X <- X cayley(-lr m / (sqrt(v) + eps)), an exact rotation, followed by one Newton-Schulz polish
X <- X (3I - X^T X) / 2 against round-off drift. Every other group gets plain AdamW. The rotation step needs whole
matrices, so it cannot run on DeepSpeed ZeRO's flattened fp32 partitions: requires_plain_optimizer() gives the
trainer a one-line reason to refuse, and `adapter.soda_rotation: cayley` is the ZeRO-safe alternative (orthogonal by
construction, trained by plain AdamW).
"""

from __future__ import annotations

import torch

from omnideft.adapters.apply import param_groups


class StiefelAdamW(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.99), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            stiefel = group.get("name") == "rotation"
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
    if spec.method == "soda" and getattr(spec, "soda_rotation", "stiefel") == "stiefel":
        return ("adapter.soda_rotation=stiefel keeps whole rotation matrices orthogonal in the optimizer, which "
                "DeepSpeed ZeRO partitions; use adapter.soda_rotation=cayley or train without ZeRO")
    return None


def build_optimizer(model, spec, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.99)) -> torch.optim.Optimizer:
    """AdamW over param_groups(model, spec, ...); StiefelAdamW when SODA's rotation factors must stay orthogonal."""
    groups = param_groups(model, spec, lr, weight_decay)
    if requires_plain_optimizer(spec) and any(g["name"] == "rotation" for g in groups):
        for g in groups:
            if g["name"] == "rotation":
                g["weight_decay"] = 0.0
        return StiefelAdamW(groups, betas=tuple(betas))
    return torch.optim.AdamW(groups, betas=tuple(betas))
