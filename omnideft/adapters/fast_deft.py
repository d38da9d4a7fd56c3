"""A fast DEFT / PaRa layer: PEFT's `DeftLinear` (same parameters `deft_P`, `deft_R`, same files, same merge) with
one fused rank-r path and a hand-written backward.

Forward, from the bias-free base output y = W x (DEFT paper, factorised form):

    t = s R x - right^T y            (N x r, the only adapter activation)
    h = y + Q_P t (+ bias)           (added in place into y: no second out-sized buffer)

PEFT instead casts the base output to fp32, runs two separate rank-r up-projections and lets autograd keep the
fp32 copies. Here the big matmuls run in the activation dtype (fp32 only for the rank-r projector math) and the
backward keeps the layer input x and the N x r tensor t; the projector is recomputed from P (O(out r^2)).
The gradient into `right` (-Y^T G_t) needs y: with fewer rows than input features it is kept (cheap: fewer
values than W); otherwise it is formed as -W (X^T G_t) = -W dA^T from x, so no out-sized activation is kept
(see deft_linear).

Used when exactly one DEFT adapter is active, unmerged, without dropout in training and with plain (not ZeRO-3
partitioned) base weights; anything else falls back to PEFT's forward, which gives the same values. Over a quantised
base layer (int8/fp8/nf4, model/quantize.py) the weight is dequantised for each matmul, one layer at a time, and kept
for backward as stored.
"""

from __future__ import annotations

import torch
from peft.tuners.deft.layer import DeftLinear
from torch import nn

from omnideft.adapters.projectors import project
from omnideft.model.quantize import dense_weight, is_quantized


class _DeftLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, p, projector, r, scale, keep_y):
        dt = x.dtype
        q_p, right = project(p, projector, keep_dtype=True)
        y = x @ dense_weight(weight, dt).T  # bias-free base output (a quantised weight dequantised for the matmul)
        t = -(y @ right.to(dt)).float()
        if r is not None:
            t.add_((x @ r.to(dt).T).float(), alpha=scale)
        if keep_y:
            h = torch.addmm(y, t.to(dt), q_p.to(dt).T)
        else:
            h = y.addmm_(t.to(dt), q_p.to(dt).T)
        if bias is not None:
            h += bias
        ctx.scale, ctx.projector = scale, projector
        # parameters (a quantised weight as stored), the N x r t, and y only in keep_y mode; the projector is
        # recomputed in backward (O(out r^2))
        ctx.save_for_backward(x, weight, p, r, t, y if keep_y else None)
        return h

    @staticmethod
    def backward(ctx, g):
        x, weight, p, r, t, y = ctx.saved_tensors
        need_x, _, _, need_p, _, need_r, _, _ = ctx.needs_input_grad
        with torch.enable_grad():
            p_leaf = p.detach().requires_grad_(need_p)
            q_p, right = project(p_leaf, ctx.projector, keep_dtype=True)
        dt = g.dtype
        g = g.contiguous()
        weight = dense_weight(weight, dt) if need_x or (need_p and y is None) else None
        gt = g @ q_p.detach().to(dt)  # dL/dt (N x r)
        d_a = (gt.T @ x) if (need_r or (need_p and y is None)) else None  # dL/dA, t = A x, A = sR - right^T W
        d_r = (d_a.float() * ctx.scale).to(r.dtype) if need_r else None
        d_p = None
        if need_p:
            d_q = (g.T @ t.to(dt)).to(q_p.dtype)
            d_right = -(y.T @ gt if y is not None else weight @ d_a.T).to(right.dtype)  # -Y^T G_t = -W dA^T
            d_p = torch.autograd.grad((q_p, right), p_leaf, (d_q, d_right))[0]
        d_x = None
        if need_x:  # dx = (g - gt right^T) W + s gt R
            d_x = torch.addmm(g, gt, right.detach().to(dt).T, alpha=-1) @ weight
            if r is not None:
                d_x.addmm_(gt, r.to(dt), alpha=ctx.scale)
        return d_x, None, None, d_p, None, d_r, None, None


def deft_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, p: torch.Tensor, projector: str,
                r: torch.Tensor | None, scale: float = 1.0, keep_base_output: bool | str = "auto") -> torch.Tensor:
    """h = W x + Q_P (scale R x - right^T W x) + bias over the last dim of x, (Q_P, right) = project(p);
    `r` None for PaRa.

    keep_base_output: keep y for the gradient into `right` (-Y^T G_t, N x out x r) instead of recomputing it as
    -W (X^T G_t) (out x in x r). "auto" keeps y only when there are fewer rows N than input features, i.e. exactly
    when that is the cheaper product; y then holds N x out < in x out values (less than the frozen weight).
    """
    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    keep = x2.shape[0] < x2.shape[1] if keep_base_output == "auto" else bool(keep_base_output)
    out = _DeftLinearFn.apply(x2, weight, bias, p, projector, r, scale, keep)
    return out.view(*shape[:-1], out.shape[-1])


class FastDeftLinear(DeftLinear):
    """PEFT's DeftLinear with the fused forward and every omnideft projector (see projectors.py)."""

    keep_base_output: bool | str = "auto"  # see deft_linear; a class attribute so benchmarks can pin it

    def _project(self, P: torch.Tensor, adapter_name: str):
        return project(P, self.deft_decomposition[adapter_name])

    def _fast_adapter(self, x: torch.Tensor) -> str | None:
        if self.disable_adapters or self.merged or self.fan_in_fan_out:
            return None
        active = [a for a in self.active_adapters if a in self.deft_P.keys()]
        if len(active) != 1:
            return None
        name = active[0]
        base = self.get_base_layer()
        if not isinstance(base, nn.Linear) or base.weight.requires_grad or hasattr(base.weight, "ds_id"):
            return None  # trainable or ZeRO-3-partitioned base weights: PEFT's path (DeepSpeed gathers there)
        if base.bias is not None and base.bias.requires_grad:
            return None
        if self.training and not isinstance(self.deft_dropout[name], nn.Identity):
            return None
        return name

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        name = self._fast_adapter(x)
        if name is None or args or kwargs:
            return super().forward(x, *args, **kwargs)
        base = self.get_base_layer()
        r = None if self.deft_para[name] else self.deft_R[name]
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):  # behave like nn.Linear under autocast
            dtype = torch.get_autocast_dtype(x.device.type)
        bias = base.bias.to(dtype) if base.bias is not None else None
        weight = base.weight if is_quantized(base.weight) else base.weight.to(dtype)  # dequantised per use
        with torch.autocast(x.device.type, enabled=False):
            return deft_linear(x.to(dtype), weight, bias, self.deft_P[name],
                               self.deft_decomposition[name], r, self.deft_scaling[name], self.keep_base_output)

    def lora_factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact LoRA form of this adapter on the current (unmerged) base weight: delta W = B A, fp32."""
        weight = dense_weight(self.get_base_layer().weight, torch.float32)
        q_p, right = self._project(self.deft_P[adapter_name], adapter_name)
        a = -(right.T @ weight)
        if not self.deft_para[adapter_name]:
            a = a + self.deft_R[adapter_name].float() * self.deft_scaling[adapter_name]
        return q_p.detach(), a.detach()

    def __repr__(self) -> str:
        return "omnideft." + super().__repr__()


def use_fast_layers(model: nn.Module) -> int:
    """Swap every PEFT DeftLinear of `model` for FastDeftLinear in place (same state, new forward); returns count."""
    n = 0
    for module in model.modules():
        if type(module) is DeftLinear:
            module.__class__ = FastDeftLinear
            n += 1
    return n
