"""Frozen batch norm folded into the convolution before it.

detectron2's ResNet convolutions carry a ``FrozenBatchNorm2d`` (fixed statistics and affine parameters),
applied as a separate pass over every activation map: about an eighth of the R50-FPN backbone's CPU time at
800x1216. Being affine per output channel, it folds into the convolution: conv(x, W) * s + t equals
conv(x, W * s, t) with s = gamma / sqrt(var + eps) and t = beta - mean * s. The folded weights are computed
in every forward (a small cost next to the maps), so the parameters, buffers and state-dict keys stay those
of the module, training updates W as before, and checkpoints are unchanged. Under tracing the plain
convolution and norm run, so that fvcore counts the model's FLOPs as for the official code.
"""

import torch
from detectron2.layers import Conv2d, FrozenBatchNorm2d
from torch import nn
from torch.nn import functional as F


class FrozenNormFoldedConv2d(Conv2d):
    """A detectron2 ``Conv2d`` whose ``FrozenBatchNorm2d`` runs as part of the convolution."""

    def forward(self, x):
        if torch.jit.is_tracing() or torch.jit.is_scripting():
            return super().forward(x)
        norm = self.norm
        scale = norm.weight * (norm.running_var + norm.eps).rsqrt()
        shift = norm.bias - norm.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias * scale
        weight = self.weight * scale.view(-1, 1, 1, 1).to(self.weight.dtype)
        x = F.conv2d(x, weight, shift.to(self.weight.dtype), self.stride, self.padding, self.dilation, self.groups)
        return self.activation(x) if self.activation is not None else x


def fold_frozen_batchnorm(module: nn.Module) -> int:
    """Turn every detectron2 ``Conv2d`` with a ``FrozenBatchNorm2d`` in ``module`` into a
    :class:`FrozenNormFoldedConv2d` (in place, same parameters). Returns how many were folded."""
    folded = 0
    for m in module.modules():
        if type(m) is Conv2d and isinstance(m.norm, FrozenBatchNorm2d):
            m.__class__ = FrozenNormFoldedConv2d
            folded += 1
    return folded
