"""Diffusion of boxes (DiffusionDet Sec. 3-4; official ``detector.py``): the cosine noise schedule, the
corruption of ground-truth boxes in training and the DDIM update used at inference.

Boxes are normalised (cx, cy, w, h) in [0, 1] of each image's own size. The diffusion runs on the signal
x0 = (2 b - 1) * scale (signal scale 2); a noisy signal maps back to boxes by clamping it to [-scale, scale]
and inverting that map. The clamp can make w or h exactly 0.
"""

import functools
import math

import torch
from torch import nn

from recursivedet.errors import ConfigValueError


def cosine_alphas_cumprod(timesteps: int = 1000, s: float = 0.008) -> torch.Tensor:
    """(T,) float64 cumulative products abar_t of Nichol & Dhariwal's cosine schedule, with the betas clipped
    at 0.999 (official ``cosine_beta_schedule``)."""
    x = torch.linspace(0, timesteps, timesteps + 1, dtype=torch.float64)
    f = torch.cos(((x / timesteps) + s) / (1 + s) * math.pi * 0.5) ** 2
    f = f / f[0]
    betas = (1 - f[1:] / f[:-1]).clamp(0, 0.999)
    return torch.cumprod(1 - betas, dim=0)


def ddim_time_pairs(steps: int, timesteps: int = 1000) -> list[tuple[int, int]]:
    """The (t, t_next) of each of ``steps`` DDIM steps: linspace(-1, T - 1, steps + 1) truncated to integers,
    reversed and paired; the last pair ends at -1 (official ``ddim_sample``). steps = 4, T = 1000:
    (999, 749), (749, 499), (499, 249), (249, -1). Computed once per (steps, T), so that an exported graph's
    sampling, which calls it while ``torch.export`` traces, reads plain numbers (see ``deploy.py``)."""
    return list(_time_pairs(steps, timesteps))


@functools.cache
def _time_pairs(steps: int, timesteps: int) -> tuple[tuple[int, int], ...]:
    times = torch.linspace(-1, timesteps - 1, steps=steps + 1).int().tolist()[::-1]
    return tuple(zip(times[:-1], times[1:], strict=True))


class BoxDiffusion(nn.Module):
    """The schedule (non-persistent buffers, rebuilt from the arguments) and the maps between boxes and signals.

    Args:
        timesteps: T (1000).
        signal_scale: the scale of the signal (official SNR_SCALE 2.0).
    """

    def __init__(self, timesteps: int = 1000, signal_scale: float = 2.0):
        super().__init__()
        if timesteps < 1 or signal_scale <= 0:
            raise ConfigValueError(f"timesteps must be >= 1 and signal_scale > 0, got {timesteps}, {signal_scale}")
        self.timesteps = timesteps
        self.scale = signal_scale
        self.register_buffer("alphas_cumprod", cosine_alphas_cumprod(timesteps), persistent=False)

    def to_signal(self, boxes: torch.Tensor) -> torch.Tensor:
        """Normalised boxes in [0, 1] -> signal in [-scale, scale]."""
        return (boxes * 2 - 1) * self.scale

    def to_boxes(self, signal: torch.Tensor) -> torch.Tensor:
        """Signal -> normalised boxes: clamped to [-scale, scale], mapped to [0, 1] (w or h can be 0)."""
        return (signal.clamp(-self.scale, self.scale) / self.scale + 1) / 2

    def pad_boxes(self, gt_boxes: torch.Tensor, num: int) -> torch.Tensor:
        """(G, 4) ground-truth boxes -> (num, 4) x0 boxes (official ``prepare_diffusion_concat``).

        No box: one (0.5, 0.5, 1, 1). Fewer than ``num``: the rest drawn from N(0.5, 1/6) per coordinate with
        w, h >= 1e-4. More than ``num``: a random ``num`` of them, in their order (the matcher still sees
        every ground-truth box).
        """
        if len(gt_boxes) == 0:
            gt_boxes = gt_boxes.new_tensor([[0.5, 0.5, 1.0, 1.0]])
        g = len(gt_boxes)
        if g < num:
            extra = torch.randn(num - g, 4, device=gt_boxes.device) / 6 + 0.5
            extra[:, 2:] = extra[:, 2:].clamp(min=1e-4)
            return torch.cat((gt_boxes, extra.to(gt_boxes.dtype)), dim=0)
        if g > num:
            keep = torch.randperm(g, device=gt_boxes.device)[:num].sort().values
            return gt_boxes[keep]
        return gt_boxes

    def corrupt(self, x0_boxes: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0): (B, N, 4) boxes, (B,) steps, (B, N, 4) standard noise -> (B, N, 4) noisy normalised
        boxes sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, mapped back by :meth:`to_boxes` (computed in float64)."""
        abar = self.alphas_cumprod[t][:, None, None]
        signal = abar.sqrt() * self.to_signal(x0_boxes.double()) + (1 - abar).sqrt() * noise.double()
        return self.to_boxes(signal).to(x0_boxes.dtype)

    def noise_from_start(self, x_t: torch.Tensor, t: int, x0: torch.Tensor) -> torch.Tensor:
        """The noise eps that takes x0 to x_t at step t: (x_t / sqrt(abar_t) - x0) / sqrt(1 / abar_t - 1)."""
        abar = self.alphas_cumprod[t]
        return ((x_t / abar.sqrt() - x0) / (1 / abar - 1).sqrt()).to(x_t.dtype)

    def ddim_step(self, x0, eps, t: int, t_next: int, eta: float, noise) -> torch.Tensor:
        """DDIM (Song et al., Eq. 12) from step t to t_next >= 0: sqrt(abar') x0 + c eps + sigma z with
        sigma = eta sqrt((1 - abar / abar') (1 - abar') / (1 - abar)) and c = sqrt(1 - abar' - sigma^2).
        All tensors (..., 4) signals; ``noise`` z standard normal."""
        abar, abar_next = self.alphas_cumprod[t], self.alphas_cumprod[t_next]
        sigma = eta * ((1 - abar / abar_next) * (1 - abar_next) / (1 - abar)).sqrt()
        c = (1 - abar_next - sigma**2).sqrt()
        return (x0 * abar_next.sqrt() + c * eps + sigma * noise).to(x0.dtype)
