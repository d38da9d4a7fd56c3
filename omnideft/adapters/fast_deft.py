"""A fast DEFT / PaRa layer: PEFT's `DeftLinear` (same parameters `deft_P`, `deft_R`, same files, same merge) with
one fused rank-r path and a hand-written backward.

Forward, from the bias-free base output y = W x (DEFT paper, factorised form):

    t = s R x - right^T y            (N x r, the only adapter activation)
    h = y + Q_P t (+ bias)           (added in place into y: no second out-sized buffer)

PEFT instead casts the base output to fp32, runs two separate rank-r up-projections and lets autograd keep the
fp32 copies. Here the big matmuls run in the activation dtype (fp32 only for the rank-r projector math) and the
backward keeps only what LoRA keeps: the layer input x plus the N x r tensor t. The gradient into `right`
(-Y^T G_t) is formed as -W (X^T G_t) = -W dA^T from x, because keeping y would cost an out-sized activation per
layer; that costs one (out x in x r) product per step, negligible next to the N x in x out base matmuls at real
OmniGen sequence lengths (thousands of tokens).

Used when exactly one DEFT adapter is active, unmerged, without dropout in training and with plain (not ZeRO-3
partitioned) base weights; anything else falls back to PEFT's forward, which gives the same values.
"""

from __future__ import annotations

import torch
from peft.tuners.deft.layer import DeftLinear
from torch import nn

from omnideft.adapters.projectors import project


class _DeftLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, q_p, right, s_r):
        dt = x.dtype
        y = x @ weight.T  # bias-free base output
        t = -(y @ right.to(dt)).float()
        if s_r is not None:
            t += (x @ s_r.to(dt).T).float()
        h = y.addmm_(t.to(dt), q_p.to(dt).T)
        if bias is not None:
            h += bias
        ctx.save_for_backward(x, weight, q_p, right, s_r, t)
        return h

    @staticmethod
    def backward(ctx, g):
        x, weight, q_p, right, s_r, t = ctx.saved_tensors
        need_x, _, _, need_q, need_right, need_r = ctx.needs_input_grad
        dt = g.dtype
        g = g.contiguous()
        gt = g @ q_p.to(dt)  # dL/dt (N x r)
        d_q = (g.T @ t.to(dt)).float() if need_q else None
        d_a = (gt.T @ x) if (need_r or need_right) else None  # dL/dA for t = A x, A = s R - right^T W
        d_r = d_a.float() if need_r else None
        d_right = -(weight @ d_a.T).float() if need_right else None
        d_x = None
        if need_x:  # dx = (g - gt right^T) W + gt s R
            d_x = torch.addmm(g, gt, right.to(dt).T, alpha=-1) @ weight
            if s_r is not None:
                d_x.addmm_(gt, s_r.to(dt))
        return d_x, None, None, d_q, d_right, d_r


def deft_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, q_p: torch.Tensor,
                right: torch.Tensor, s_r: torch.Tensor | None) -> torch.Tensor:
    """h = W x + Q_P (s R x - right^T W x) + bias over the last dim of x; `s_r` None for PaRa."""
    shape = x.shape
    out = _DeftLinearFn.apply(x.reshape(-1, shape[-1]), weight, bias, q_p, right, s_r)
    return out.view(*shape[:-1], weight.shape[0])


class FastDeftLinear(DeftLinear):
    """PEFT's DeftLinear with the fused forward and every omnideft projector (see projectors.py)."""

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
        q_p, right = self._project(self.deft_P[name], name)
        s_r = None if self.deft_para[name] else self.deft_R[name].float() * self.deft_scaling[name]
        dtype = x.dtype
        if torch.is_autocast_enabled(x.device.type):  # behave like nn.Linear under autocast
            dtype = torch.get_autocast_dtype(x.device.type)
        bias = base.bias.to(dtype) if base.bias is not None else None
        with torch.autocast(x.device.type, enabled=False):
            return deft_linear(x.to(dtype), base.weight.to(dtype), bias, q_p, right, s_r)

    def lora_factors(self, adapter_name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact LoRA form of this adapter on the current (unmerged) base weight: delta W = B A, fp32."""
        weight = self.get_base_layer().weight.float()
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
