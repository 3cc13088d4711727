"""AdaMixer's backbone and neck (official ``ChannelMapping`` neck and mmdet ResNet settings): a bottom-up network
whose levels each go through a 1x1 conv to the model width and one GroupNorm(32) shared by all levels; no
top-down path (no FPN).

The official ResNet trains its batch-norm affine parameters but keeps their statistics fixed (mmdet
``norm_eval=True``) and freezes the stem and the first stage (``frozen_stages=1``, parameters still counted);
with ``norm="BN"`` in the bottom-up network the same holds here (``norm_eval``, ``frozen_stages``).
"""

import math

import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import Backbone
from torch import nn


class ChannelMapping(Backbone):
    """Bottom-up features -> 1x1 conv (with bias) per level -> shared GroupNorm.

    Args:
        bottom_up: a detectron2 backbone (e.g. ResNet with res2-res5).
        in_features: its outputs to map, from high to low resolution.
        out_channels: the model width c.
        norm_groups: groups of the shared GroupNorm (official 32).
        norm_eval: keep the bottom-up network's batch norms in inference mode while training.
        frozen_stages: freeze the stem and this many stages after it (official 1: stem and res2); -1: none.
    """

    def __init__(
        self,
        *,
        bottom_up: Backbone,
        in_features: list[str],
        out_channels: int = 256,
        norm_groups: int = 32,
        norm_eval: bool = True,
        frozen_stages: int = 1,
    ):
        super().__init__()
        shapes = bottom_up.output_shape()
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(shapes[f].channels, out_channels, 1) for f in self.in_features)
        self.norm = nn.GroupNorm(norm_groups, out_channels)
        strides = [shapes[f].stride for f in self.in_features]
        self._out_features = [f"p{int(math.log2(s))}" for s in strides]
        self._out_feature_strides = dict(zip(self._out_features, strides, strict=True))
        self._out_feature_channels = dict.fromkeys(self._out_features, out_channels)
        self._size_divisibility = max(strides)
        self.norm_eval = norm_eval
        for conv in self.lateral_convs:  # official: xavier-uniform convs, zero bias
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)
        if frozen_stages >= 0:
            frozen = {"stem", *(f"res{i + 2}" for i in range(frozen_stages))}
            for name, child in bottom_up.named_children():
                if name in frozen:
                    child.requires_grad_(False)

    @property
    def size_divisibility(self) -> int:
        return self._size_divisibility

    def output_shape(self):
        return {
            f: ShapeSpec(channels=self._out_feature_channels[f], stride=self._out_feature_strides[f])
            for f in self._out_features
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.norm_eval:
            for m in self.bottom_up.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) images -> {p_l: (B, c, H / s_l, W / s_l)}."""
        maps = self.bottom_up(x)
        return {
            name: self.norm(conv(maps[f]))
            for name, conv, f in zip(self._out_features, self.lateral_convs, self.in_features, strict=True)
        }
