"""The time embedding of DiffusionDet's head (official ``DynamicHead.time_mlp``): the sinusoid of the step t
(DDPM's transformer-style embedding), then Linear(c -> 4c) -> GELU -> Linear(4c -> 4c), computed once per
image and shared by every stage, each of which turns it into its own scale and shift
(:class:`~recursivedet.modeling.DecoderStage` ``condition_dim``)."""

import math

import torch
from torch import nn

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.linear import Linear


def timestep_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) diffusion steps -> (B, dim): [sin(t w_i), cos(t w_i)] with w_i = 10000^(-i / (dim/2 - 1)),
    i = 0 .. dim/2 - 1 (official ``SinusoidalPositionEmbeddings``: sines first, then cosines)."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    angles = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat((angles.sin(), angles.cos()), dim=-1)


class TimeEmbedding(nn.Module):
    """(B,) steps -> (B, 4c) time embedding (1,312,768 parameters at c = 256, as the official code).

    Args:
        dim: c, the sinusoid's width (the model width in the official code).
        out_dim: width of the embedding (official 4c); the stages' ``condition_dim``.
    """

    def __init__(self, dim: int = 256, out_dim: int = 1024):
        super().__init__()
        if dim < 4 or dim % 2:
            raise ConfigValueError(f"the time embedding's width must be even and at least 4, got {dim}")
        self.dim = dim
        self.out_dim = out_dim
        self.layers = nn.Sequential(Linear(dim, out_dim), nn.GELU(), Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.layers(timestep_sinusoid(t, self.dim).to(self.layers[0].weight.dtype))
