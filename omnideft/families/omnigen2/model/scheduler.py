"""OmniGen2's flow-matching Euler scheduler: t runs from 0 (noise) to 1 (data) and, with `dynamic_time_shift`, the
uniform grid is bent towards noise by m = sqrt(latent tokens) / 40 (m = 1 at 320x320 px, 3.2 at 1024x1024):
t' = t / (m - m t + t). A step is x + (t_next - t) * v, in fp32.

Written from the published `FlowMatchEulerDiscreteScheduler` of the OmniGen2 package (diffusers' scheduler of the
same name has no `num_tokens` shift); it saves and loads the published `scheduler/scheduler_config.json`.
"""

from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config

UNIT_SHIFT_SIDE = 40  # m = sqrt(tokens) / 40: 1 at 1600 latent positions (a 40x40 latent, 320 px with an 8x VAE)


def shifted_times(num_steps: int, num_tokens: int | None, dynamic_time_shift: bool = True) -> np.ndarray:
    """The times a sampler visits: linspace(0, 1, n + 1)[:-1] (float32), shifted by m when asked."""
    t = np.linspace(0, 1, num_steps + 1, dtype=np.float32)[:-1]
    if dynamic_time_shift and num_tokens is not None:
        m = np.sqrt(num_tokens) / UNIT_SHIFT_SIDE
        t = t / (m - m * t + t)
    return t


class OmniGen2FlowScheduler(ConfigMixin):
    """Euler on the shifted grid; `set_timesteps` then `step` once per time, in order."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, dynamic_time_shift: bool = True):
        self.timesteps = torch.linspace(0, 1, num_train_timesteps + 1)[:-1]
        self._grid = torch.cat([self.timesteps, torch.ones(1)])
        self._index = 0

    def set_timesteps(self, num_inference_steps: int, num_tokens: int | None = None, device=None):
        t = torch.from_numpy(shifted_times(num_inference_steps, num_tokens, self.config.dynamic_time_shift))
        self.timesteps = t.to(device=device, dtype=torch.float32)
        self._grid = torch.cat([self.timesteps, torch.ones(1, device=self.timesteps.device)])
        self._index = 0

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        t, t_next = self._grid[self._index], self._grid[self._index + 1]
        self._index += 1
        return (sample.to(torch.float32) + (t_next - t) * velocity).to(velocity.dtype)


class OmniGen2DPMSolver(ConfigMixin):
    """DPM-Solver++ (2M, midpoint) on the same shifted grid, as the published inference offers it
    (`--scheduler dpmsolver++`: data prediction, order 2, first order at the first and the last step, sigma = 1 - t
    ending at 0). Written from the published scheduler rather than diffusers' DPMSolverMultistepScheduler: that one
    takes velocity with the opposite sign and builds its flow sigmas from linspace(1, 1/1000), not OmniGen2's grid."""

    config_name = "scheduler_config.json"
    order = 1

    @register_to_config
    def __init__(self, dynamic_time_shift: bool = True):
        self.timesteps = torch.zeros(0)

    def set_timesteps(self, num_inference_steps: int, num_tokens: int | None = None, device=None):
        t = torch.from_numpy(shifted_times(num_inference_steps, num_tokens, self.config.dynamic_time_shift))
        self.timesteps = t.to(device=device, dtype=torch.float32)
        self._sigmas = torch.cat([1 - t.to(torch.float32), torch.zeros(1)])  # kept on CPU, as the published one
        self._index = 0
        self._previous_x0: torch.Tensor | None = None

    def _lambda(self, sigma: torch.Tensor) -> torch.Tensor:
        """log(alpha / sigma) with alpha = 1 - sigma: -inf at pure noise, +inf at data."""
        return torch.log(1 - sigma) - torch.log(sigma)

    def step(self, velocity: torch.Tensor, sample: torch.Tensor) -> torch.Tensor:
        i, sigmas = self._index, self._sigmas
        x0 = sample + sigmas[i] * velocity  # data prediction from the velocity (data - noise)
        sample = sample.to(torch.float32)
        sigma_t, sigma_s = sigmas[i + 1], sigmas[i]
        alpha_t = 1 - sigma_t
        h = self._lambda(sigma_t) - self._lambda(sigma_s)
        first_order = self._previous_x0 is None or i == len(self.timesteps) - 1
        if first_order:
            out = (sigma_t / sigma_s) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0
        else:
            r0 = (self._lambda(sigma_s) - self._lambda(sigmas[i - 1])) / h
            d1 = (1.0 / r0) * (x0 - self._previous_x0)
            out = ((sigma_t / sigma_s) * sample - (alpha_t * (torch.exp(-h) - 1.0)) * x0
                   - 0.5 * (alpha_t * (torch.exp(-h) - 1.0)) * d1)
        self._previous_x0 = x0
        self._index += 1
        return out.to(velocity.dtype)


SCHEDULERS = {"euler": OmniGen2FlowScheduler, "dpmsolver++": OmniGen2DPMSolver}
