"""AdaMixer's 3D point sampling as weighted row gathers: the same numbers as the official per-level
``F.grid_sample`` (bilinear, zero padding, align_corners False) times the level weights, computed as one
``F.embedding_bag`` per level on channels-last maps.

A point (x, y) in pixels falls, on level l of stride s, at the continuous cell coordinate (x / s - 0.5,
y / s - 0.5) (grid_sample's unnormalisation with align_corners False); its value is the sum over the 4
neighbouring cells of the bilinear weight times the level weight times the cell's feature, a neighbour outside
the map counting 0. Every (point, group) is one bag of 4 rows of the level's (B H W G, c / G) table: the output
comes out in the (B, N, G, P, c / G) layout the mixing reads, the maps are read in place (a channels-last map
is that table without a copy), and the backward pass scatters into the maps and differentiates the weights
(the gradient of the points) as grid_sample's does.
"""

import torch
from torch.nn import functional as F


def level_tables(features: list[torch.Tensor], num_groups: int) -> list[torch.Tensor]:
    """Per level, the (B H_l W_l G, c / G) table of a (B, c, H_l, W_l) map (a view of a channels-last map)."""
    tables = []
    for value in features:
        b, c, h, w = value.shape
        tables.append(value.permute(0, 2, 3, 1).reshape(b * h * w * num_groups, c // num_groups))
    return tables


def gather_points(
    features: list[torch.Tensor], strides: list[int], points: torch.Tensor, level_weights: torch.Tensor
) -> torch.Tensor:
    """Sample the levels at the points and sum them with the level weights.

    Args:
        features: per level (B, c, H_l, W_l) maps (channels-last memory format avoids a copy).
        strides: per level stride in pixels.
        points: (B, N, G, P, 2) x, y in pixels.
        level_weights: (B, N, G, P, L) weight of each level.
    Returns:
        (B, N, G, P, c / G) sampled features.
    """
    b, n, g, p, _ = points.shape
    tables = level_tables(features, g)
    batch = torch.arange(b, device=points.device).view(b, 1, 1, 1, 1)
    group = torch.arange(g, device=points.device).view(1, 1, g, 1, 1)
    out = None
    for level, (value, stride, table) in enumerate(zip(features, strides, tables, strict=True)):
        h, w = value.shape[-2:]
        cell = points / stride - 0.5
        x0, y0 = cell[..., 0:1].floor(), cell[..., 1:2].floor()
        fx, fy = cell[..., 0:1] - x0, cell[..., 1:2] - y0
        xs = torch.cat((x0, x0 + 1, x0, x0 + 1), dim=-1)  # (B, N, G, P, 4): the 4 neighbours
        ys = torch.cat((y0, y0, y0 + 1, y0 + 1), dim=-1)
        weights = torch.cat(((1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy), dim=-1)
        inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
        weights = weights * inside * level_weights[..., level : level + 1]
        xs, ys = xs.long().clamp(0, w - 1), ys.long().clamp(0, h - 1)
        rows = ((batch * h + ys) * w + xs) * g + group
        sampled = F.embedding_bag(
            rows.view(-1, 4), table, per_sample_weights=weights.reshape(-1, 4).to(table.dtype), mode="sum"
        )
        out = sampled if out is None else out.add_(sampled)  # in place: no fresh 10 MB per level
    return out.view(b, n, g, p, -1)
