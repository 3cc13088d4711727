"""p_f without pooling: the image sine PE of Sec. 3.3, RoIAligned analytically.

The official code pools a c-channel positional map with RoIAlign in every stage. That map is separable:
its first c/2 channels depend on the row only, the others on the column only. RoIAlign's bilinear weights
along the other axis sum to one, so the pooled value factorises into a 1-D interpolation along one axis
times the fraction of in-range samples along the other. This module evaluates exactly that, replicating
torchvision's ``roi_align`` sampling (bin grid, the -1 / size validity test, edge clamping) and
detectron2's ``ROIPooler`` level assignment, so it equals pooling the map (up to float rounding) at a
fraction of the cost, and lets the projection of p_f run per row and per column instead of per element.
"""

import math
from dataclasses import dataclass

import torch
from detectron2.layers import ROIAlign
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes


@dataclass
class SeparableRoIPE:
    """Pooled image PE of M boxes on an R x R grid, as factors.

    p_f[m, i, j, :F] = y_sum[m, i] * x_valid[m, j] and p_f[m, i, j, F:] = x_sum[m, j] * y_valid[m, i].
    """

    y_sum: torch.Tensor  # (M, R, F) row-channel part of each row bin (1-D RoIAlign of the row sinusoid)
    x_valid: torch.Tensor  # (M, R) fraction of a column bin's samples that RoIAlign counts
    x_sum: torch.Tensor  # (M, R, F)
    y_valid: torch.Tensor  # (M, R)

    def dense(self) -> torch.Tensor:
        """(M, R * R, 2F) as RoIAlign of the positional map would return it (bins row-major)."""
        m, r, f = self.y_sum.shape
        y_part = self.y_sum[:, :, None, :] * self.x_valid[:, None, :, None]
        x_part = self.x_sum[:, None, :, :] * self.y_valid[:, :, None, None]
        return torch.cat((y_part, x_part), dim=-1).view(m, r * r, 2 * f)

    def project(self, weight: torch.Tensor) -> torch.Tensor:
        """``dense() @ weight.T`` computed per row and per column bin: (M, R * R, out)."""
        m, r, f = self.y_sum.shape
        rows = self.y_sum @ weight[:, :f].T  # (M, R, out)
        cols = self.x_sum @ weight[:, f:].T
        out = (
            rows[:, :, None, :] * self.x_valid[:, None, :, None] + cols[:, None, :, :] * self.y_valid[:, :, None, None]
        )
        return out.view(m, r * r, -1)


def analytic_pooling_supported(pooler: ROIPooler) -> bool:
    """RoIAlign with a fixed sampling grid (the official ROIAlignV2, sampling ratio 2, is)."""
    return all(isinstance(p, ROIAlign) and p.sampling_ratio > 0 for p in pooler.level_poolers)


class AnalyticRoIPositionEncoding:
    """RoIAlign of :class:`~recursivedet.modeling.position_encoding.ImageSinePE` maps, computed in closed form.

    Args:
        pooler: the decoder's ROIPooler (its levels, scales, sampling ratio, alignment and level rule).
        num_feats: F, frequencies per axis (c / 2).
        temperature, scale: of the sine embedding (10000, 2 pi).
    """

    def __init__(self, pooler: ROIPooler, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        if not analytic_pooling_supported(pooler):
            raise ValueError("analytic RoI PE needs RoIAlign poolers with a fixed sampling ratio")
        self.pooler = pooler
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale

    def _axis(self, start, bin_size, grid, size, extent, dim_t, resolution):
        """1-D RoIAlign along one axis for M boxes.

        Args:
            start, bin_size: (M,) RoI start and bin size in map cells; grid: samples per bin.
            size: (M,) map size along the axis (cells); extent: (M,) normalisation extent of the PE.
        Returns:
            (M, R, F) sum over the bin's samples of the interpolated sinusoid (zero for samples RoIAlign
            drops), divided by the grid; and (M, R) fraction of samples kept.
        """
        device = start.device
        bins = torch.arange(resolution, dtype=start.dtype, device=device)
        offsets = (torch.arange(grid, dtype=start.dtype, device=device) + 0.5) / grid
        pos = start[:, None, None] + (bins[None, :, None] + offsets[None, None, :]) * bin_size[:, None, None]
        size = size[:, None, None]
        valid = (pos >= -1.0) & (pos <= size)
        pos = pos.clamp(min=0)
        low = pos.floor()
        at_edge = low >= size - 1
        low = torch.where(at_edge, size - 1, low)
        high = torch.where(at_edge, low, low + 1)
        frac = torch.where(at_edge, torch.zeros_like(pos), pos - low)

        # Sinusoid of the 1-based cell index normalised by the extent (ImageSinePE), at both neighbours.
        norm = (self.scale / (extent + 1e-6))[:, None, None, None] / dim_t  # (M, 1, 1, F)
        odd = torch.arange(self.num_feats, device=device) % 2 == 1

        def sinusoid(index):
            angle = (index[..., None] + 1) * norm
            return torch.where(odd, angle.cos(), angle.sin())

        value = sinusoid(low) * (1 - frac)[..., None] + sinusoid(high) * frac[..., None]
        value = value * valid[..., None]
        return value.sum(2) / grid, valid.sum(2).to(start.dtype) / grid

    def __call__(self, pixel_boxes: torch.Tensor, map_sizes, extents) -> SeparableRoIPE:
        """Pooled image PE of every box.

        Args:
            pixel_boxes: (B, N, 4) boxes in input pixels (x1, y1, x2, y2).
            map_sizes: per pooler level, (H, W) of the batch's feature map.
            extents: per pooler level, (B, 2) height and width over which each image's PE is normalised.
        Returns:
            :class:`SeparableRoIPE` for the B * N boxes in image-major order.
        """
        b, n, _ = pixel_boxes.shape
        # At least float32 (half precision is too coarse for pixel coordinates), float64 if given.
        dtype = torch.promote_types(pixel_boxes.dtype, torch.float32)
        boxes = pixel_boxes.reshape(b * n, 4).to(dtype)
        pooler = self.pooler
        levels = assign_boxes_to_levels(
            [Boxes(boxes)], pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
        image = torch.arange(b, device=boxes.device).repeat_interleave(n)
        scales = torch.tensor([p.spatial_scale for p in pooler.level_poolers], dtype=dtype, device=boxes.device)[levels]
        sizes = torch.tensor([list(s) for s in map_sizes], dtype=dtype, device=boxes.device)[levels]
        norm_extents = torch.stack([e.to(dtype) for e in extents])[levels, image]  # (M, 2)
        first = pooler.level_poolers[0]
        offset = 0.5 if first.aligned else 0.0
        resolution = pooler.output_size[0]
        grid = first.sampling_ratio

        start = boxes * scales[:, None] - offset  # x1, y1, x2, y2 in cells
        width = start[:, 2] - start[:, 0]
        height = start[:, 3] - start[:, 1]
        if not first.aligned:
            width, height = width.clamp(min=1), height.clamp(min=1)
        dim_t = self.temperature ** (
            2 * torch.div(torch.arange(self.num_feats, device=boxes.device), 2, rounding_mode="floor") / self.num_feats
        )
        y_sum, y_valid = self._axis(
            start[:, 1], height / resolution, grid, sizes[:, 0], norm_extents[:, 0], dim_t, resolution
        )
        x_sum, x_valid = self._axis(
            start[:, 0], width / pooler.output_size[1], grid, sizes[:, 1], norm_extents[:, 1], dim_t, resolution
        )
        return SeparableRoIPE(y_sum, x_valid, x_sum, y_valid)
