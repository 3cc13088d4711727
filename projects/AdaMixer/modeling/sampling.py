"""AdaMixer's adaptive 3D feature sampling (AdaMixer Sec. 3.3, official ``make_sample_points`` and
``sampling_3d``), in plain PyTorch (``F.grid_sample``).

Each query predicts, per group g (G = 4) and point p (P_in = 32), an offset (dx, dy, dz) with one Linear(c ->
G * P_in * 3). The point is (x + dx w, y + dy h) in pixels and z + dz in the 3D feature space whose levels sit at
z_l = log2(stride_l). Its feature is the sum over levels of softmax_l(-(z - z_l)^2 / tau) (tau = 2) times the
bilinear sample (zeros outside, align_corners False) of the group's c / G channels of level l at (x, y).
"""

import torch
from torch import nn
from torch.nn import functional as F

from recursivedet.modeling.linear import Linear

from .boxes import box_size
from .point_gather import gather_points


class AdaptiveSampling(nn.Module):
    """Offsets from the query, then the sampled features.

    Args:
        dim: query width c. num_groups: G. num_points: P_in.
        level_tau: temperature of the level weights (official 2).
        gather: sample by weighted row gathers (:mod:`~.point_gather`: the same numbers, faster, no copy of the
            sampled features); False calls ``F.grid_sample`` per level as the official code does.
    """

    def __init__(
        self, dim: int, num_groups: int = 4, num_points: int = 32, level_tau: float = 2.0, gather: bool = True
    ):
        super().__init__()
        if dim % num_groups:
            raise ValueError(f"feature width {dim} is not divisible by the {num_groups} sampling groups")
        self.num_groups = num_groups
        self.num_points = num_points
        self.level_tau = level_tau
        self.gather = gather
        self.offset_generator = Linear(dim, num_groups * num_points * 3)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        """Official init: zero weight; xy bias U(-0.5, 0.5) (P_in not a square), dz bias -1 (one level finer)."""
        nn.init.zeros_(self.offset_generator.weight)
        bias = self.offset_generator.bias.view(self.num_groups, self.num_points, 3)
        nn.init.uniform_(bias, -0.5, 0.5)
        if int(self.num_points**0.5) ** 2 == self.num_points:
            # A square number of points starts on a regular grid over the box (official code).
            side = int(self.num_points**0.5)
            centres = torch.linspace(-0.5, 0.5, side + 1)[:-1] + 0.5 / side
            bias[..., 0] = centres.view(-1, 1).expand(side, side).flatten()
            bias[..., 1] = centres.view(1, -1).expand(side, side).flatten()
        nn.init.constant_(bias[..., 2], -1.0)

    def points(self, query: torch.Tensor, xyzr: torch.Tensor) -> torch.Tensor:
        """(B, N, c) queries, (B, N, 4) positions -> (B, N, G, P_in, 3) sampling points (x, y in pixels, z)."""
        b, n, _ = query.shape
        offset = self.offset_generator(query).view(b, n, self.num_groups, self.num_points, 3)
        xy = xyzr[:, :, None, None, :2] + offset[..., :2] * box_size(xyzr)[:, :, None, None, :]
        z = xyzr[:, :, None, None, 2:3] + offset[..., 2:3]
        return torch.cat((xy, z), dim=-1)

    def sample(self, features: list[torch.Tensor], strides: list[int], points: torch.Tensor) -> torch.Tensor:
        """Sample the feature pyramid at 3D points.

        Args:
            features: per level (B, c, H_l, W_l) maps (the neck's output, padded batch; contiguous for
                ``grid_sample``, best channels-last for the gathers).
            strides: per level stride in pixels.
            points: (B, N, G, P, 3) from :meth:`points`.
        Returns:
            (B, N, G, P, c / G) sampled features.
        """
        b, n, g, p, _ = points.shape
        c = features[0].shape[1]
        levels = torch.as_tensor(strides, dtype=points.dtype, device=points.device).log2()
        weights = torch.softmax(-((points[..., 2:3] - levels) ** 2) / self.level_tau, dim=-1)  # (B, N, G, P, L)
        if self.gather:
            return gather_points(features, strides, points[..., :2], weights)
        # (B * G, N, P, 2) points per group, as grid_sample takes them
        xy = points[..., :2].permute(0, 2, 1, 3, 4).reshape(b * g, n, p, 2)
        weights = weights.permute(0, 2, 1, 3, 4).reshape(b * g, 1, n, p, -1)
        out = None
        for level, (value, stride) in enumerate(zip(features, strides, strict=True)):
            h, w = value.shape[-2:]
            extent = xy.new_tensor([w * stride, h * stride])
            grid = xy / extent * 2.0 - 1.0
            sampled = F.grid_sample(
                value.reshape(b * g, c // g, h, w), grid, mode="bilinear", padding_mode="zeros", align_corners=False
            )  # (B * G, c / G, N, P)
            sampled = sampled * weights[..., level]
            out = sampled if out is None else out + sampled
        return out.view(b, g, c // g, n, p).permute(0, 3, 1, 4, 2)

    def forward(self, features, strides, query, xyzr):
        """Sampled features (B, N, G, P, c / G) and the points (B, N, G, P, 3) they were sampled at."""
        points = self.points(query, xyzr)
        return self.sample(features, strides, points), points
