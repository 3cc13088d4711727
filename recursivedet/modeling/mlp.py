"""A plain multi-layer perceptron (ReLU between layers), as used by the box PE heads."""

import torch
from torch import nn
from torch.nn import functional as F

from .linear import Linear


class MLP(nn.Module):
    """``num_layers`` Linear layers ``in_dim -> hidden_dim ... -> out_dim`` with ReLU in between."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x
