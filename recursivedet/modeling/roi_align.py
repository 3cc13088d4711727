"""Multi-level RoIAlign as a weighted gather of channels-last rows: one ``embedding_bag`` per FPN level.

detectron2's ``ROIPooler`` runs torchvision's ``roi_align`` on (B, c, H, W) maps: each bilinear sample reads
c values H x W apart, and the CPU kernel runs on one thread. In channels-last layout the c values of a pixel
are one contiguous row, so a pooled bin is a weighted sum of rows: the four neighbours of each of its
sampling points, with RoIAlign's bilinear weights. ``F.embedding_bag`` computes such sums in one call (and
its backward scatters the gradient back onto the map). The sampling positions and weights below follow
torchvision's kernel operation by operation (ROIAlign and ROIAlignV2, a fixed sampling grid), so in float32
and float64 the result equals ``ROIPooler`` up to the order of the float additions (the tests compare values
and gradients); under autocast the sampling points stay float32 (ROIPooler rounds the boxes to half
precision).

:func:`roi_sampling` is shared with the closed-form RoI positional encoding
(:mod:`recursivedet.modeling.roi_position_encoding`), which samples the same points.
"""

from dataclasses import dataclass

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes
from torch.nn import functional as F


def fixed_grid_roi_align(pooler: ROIPooler) -> bool:
    """Whether every level is RoIAlign with a fixed sampling grid (the official ROIAlignV2, ratio 2, is)."""
    return all(isinstance(p, ROIAlign) and p.sampling_ratio > 0 for p in pooler.level_poolers)


@dataclass
class AxisSamples:
    """RoIAlign's sampling points along one axis for M boxes: R bins x G points per bin.

    A point at position p contributes (1 - frac) of cell ``low`` and frac of cell ``high``; points outside
    [-1, size] contribute nothing (``valid``).
    """

    low: torch.Tensor  # (M, R, G) int64
    high: torch.Tensor  # (M, R, G) int64
    frac: torch.Tensor  # (M, R, G)
    valid: torch.Tensor  # (M, R, G) bool


@dataclass
class RoISampling:
    """Where RoIAlign samples M boxes: the FPN level of each box and its points along y and x."""

    levels: torch.Tensor  # (M,) int64, index into the pooler's levels
    y: AxisSamples
    x: AxisSamples
    grid: int  # G, points per bin along each axis


def _axis_samples(start, bin_size, grid: int, resolution: int, size) -> AxisSamples:
    """torchvision's ``pre_calc_for_bilinear_interpolate`` along one axis, vectorised over boxes.

    Args:
        start, bin_size: (M,) RoI start and bin size in map cells. size: (M,) map size along the axis.
    """
    bins = torch.arange(resolution, dtype=start.dtype, device=start.device)[None, :, None]
    points = torch.arange(grid, dtype=start.dtype, device=start.device)[None, None, :] + 0.5
    start, bin_size, size = start[:, None, None], bin_size[:, None, None], size[:, None, None]
    # Same operations in the same order as the kernel: start + r * bin + (g + .5) * bin / G.
    pos = start + bins * bin_size + points * bin_size / grid
    valid = (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    low = pos.floor()
    at_edge = low >= size - 1
    low = torch.where(at_edge, size - 1, low)
    pos = torch.where(at_edge, low, pos)
    high = torch.where(at_edge, low, low + 1)
    return AxisSamples(low.long(), high.long(), pos - low, valid)


def roi_sampling(pooler: ROIPooler, boxes: torch.Tensor, map_sizes) -> RoISampling:
    """RoIAlign's sampling points of M boxes on the pooler's levels (detectron2's level rule).

    Args:
        pooler: a ROIPooler for which :func:`fixed_grid_roi_align` holds.
        boxes: (M, 4) pixel (x1, y1, x2, y2); float32 or float64 (the points are computed in that dtype).
        map_sizes: per level, (H, W) of the feature map.
    """
    levels_ = pooler.level_poolers
    device, dtype = boxes.device, boxes.dtype
    if len(levels_) == 1:
        levels = torch.zeros(len(boxes), dtype=torch.int64, device=device)
    else:
        # A box with x2 < x1 or y2 < y1 (a learned initial box can be trained into one) has a negative area,
        # whose square root would make a NaN level and an index error: it goes to the level of a zero-size box.
        level_boxes = torch.cat((boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2])), dim=1)
        levels = assign_boxes_to_levels(
            [Boxes(level_boxes)], pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
    scales = torch.tensor([p.spatial_scale for p in levels_], dtype=dtype, device=device)[levels]
    sizes = torch.tensor([list(s) for s in map_sizes], dtype=dtype, device=device)[levels]
    first = levels_[0]
    start = boxes * scales[:, None] - (0.5 if first.aligned else 0.0)
    width = start[:, 2] - start[:, 0]
    height = start[:, 3] - start[:, 1]
    if not first.aligned:  # legacy ROIAlign: at least one cell
        width, height = width.clamp(min=1), height.clamp(min=1)
    res_h, res_w = pooler.output_size
    grid = first.sampling_ratio
    y = _axis_samples(start[:, 1], height / res_h, grid, res_h, sizes[:, 0])
    x = _axis_samples(start[:, 0], width / res_w, grid, res_w, sizes[:, 1])
    return RoISampling(levels, y, x, grid)


def _level_bags(sampling: RoISampling, rows: torch.Tensor, image: torch.Tensor, width: int, height: int):
    """Row indices into the flattened (B * H * W, c) map and their weights, one bag per (box, bin):
    (M_l * R_h * R_w, G * 2 * G * 2) each, for the boxes ``rows`` of one level."""
    y, x = sampling.y, sampling.x

    def neighbours(axis):  # (M_l, R, G, 2) cell indices and bilinear weights
        frac = axis.frac[rows]
        cells = torch.stack((axis.low[rows], axis.high[rows]), dim=-1)
        return cells, torch.stack((1 - frac, frac), dim=-1) * axis.valid[rows][..., None]

    y_cells, y_weights = neighbours(y)
    x_cells, x_weights = neighbours(x)
    # (M_l, R_h, G, 2, R_w, G, 2) -> bins (M_l, R_h, R_w) x bag (G, 2, G, 2)
    index = (image[rows, None, None, None] * height + y_cells)[..., None, None, None] * width + x_cells[
        :, None, None, None
    ]
    weight = y_weights[..., None, None, None] * x_weights[:, None, None, None] / sampling.grid**2
    m, r_h, g, _, r_w = index.shape[:5]
    order = (0, 1, 4, 2, 3, 5, 6)
    bag = g * 2 * g * 2
    return index.permute(order).reshape(m * r_h * r_w, bag), weight.permute(order).reshape(m * r_h * r_w, bag)


def gather_roi_align(pooler: ROIPooler, features: list[torch.Tensor], pixel_boxes: torch.Tensor) -> torch.Tensor:
    """``pooler(features, boxes)`` for a RoIAlign pooler with a fixed grid, computed by row gathers.

    Args:
        features: per level, (B, c, H_l, W_l) maps; channels-last memory format avoids a copy per level.
        pixel_boxes: (B, N, 4) pixel (x1, y1, x2, y2) boxes of each image.
    Returns:
        (B * N, R_h * R_w, c) pooled features, bins row-major (``pooler(...).flatten(2).transpose(1, 2)``).
    """
    b, n, _ = pixel_boxes.shape
    # As ROIPooler in float32 and float64: detectron2's Boxes round the boxes to float32, torchvision samples
    # in the maps' dtype. With half-precision maps (autocast) the points stay float32 here, where ROIPooler
    # rounds the boxes to the maps' dtype; the bilinear weights then meet the maps in their dtype.
    dtype = torch.promote_types(features[0].dtype, torch.float32)
    boxes = pixel_boxes.reshape(b * n, 4).float().to(dtype)
    sampling = roi_sampling(pooler, boxes, [f.shape[-2:] for f in features])
    image = torch.arange(b, device=boxes.device).repeat_interleave(n)
    bins = pooler.output_size[0] * pooler.output_size[1]
    pooled, order = [], []
    for level, fmap in enumerate(features):
        # A level without boxes still joins the graph (zero gradient, as with ROIPooler): distributed training
        # expects every parameter to take part in every step.
        rows = (sampling.levels == level).nonzero().squeeze(1)
        channels, height, width = fmap.shape[1:]
        table = fmap.permute(0, 2, 3, 1).reshape(-1, channels)  # a view for channels-last maps
        index, weight = _level_bags(sampling, rows, image, width, height)
        pooled.append(F.embedding_bag(index, table, mode="sum", per_sample_weights=weight.to(table.dtype)))
        order.append(rows)
    out = torch.cat(pooled).view(b * n, bins, features[0].shape[1])
    if len(features) == 1:
        return out
    return out[torch.argsort(torch.cat(order))]


def pool_roi_features(pooler: ROIPooler, features, pixel_boxes: torch.Tensor, gather: bool = True) -> torch.Tensor:
    """(B * N, R * R, c) RoI features of (B, N, 4) pixel boxes: :func:`gather_roi_align` when ``gather`` and
    the pooler allows it, else detectron2's ``ROIPooler`` (torchvision's roi_align, the official code's way)."""
    if gather and fixed_grid_roi_align(pooler):
        return gather_roi_align(pooler, features, pixel_boxes)
    return pooler(features, [Boxes(x) for x in pixel_boxes]).flatten(2).transpose(1, 2)
