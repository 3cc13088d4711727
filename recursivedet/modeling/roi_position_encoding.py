"""p_f without pooling: the image sine PE of Sec. 3.3, RoIAligned analytically.

The official code pools a c-channel positional map with RoIAlign in every stage. That map is separable:
its first c/2 channels depend on the row only, the others on the column only. RoIAlign's bilinear weights
along the other axis sum to one, so the pooled value factorises into a 1-D interpolation along one axis
times the fraction of in-range samples along the other. This module evaluates exactly that, with
torchvision's ``roi_align`` sampling points and detectron2's ``ROIPooler`` level assignment
(:func:`~recursivedet.modeling.roi_align.roi_sampling`), so it equals pooling the map (up to float rounding) at a
fraction of the cost, and lets the projection of p_f run per row and per column instead of per element.
"""

import math
from dataclasses import dataclass

import torch
from detectron2.modeling.poolers import ROIPooler

from .roi_align import AxisSamples, fixed_grid_roi_align, roi_sampling


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


class AnalyticRoIPositionEncoding:
    """RoIAlign of :class:`~recursivedet.modeling.position_encoding.ImageSinePE` maps, computed in closed form.

    Args:
        pooler: the decoder's ROIPooler (its levels, scales, sampling ratio, alignment and level rule).
        num_feats: F, frequencies per axis (c / 2).
        temperature, scale: of the sine embedding (10000, 2 pi).
    """

    def __init__(self, pooler: ROIPooler, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        if not fixed_grid_roi_align(pooler):
            raise ValueError("analytic RoI PE needs RoIAlign poolers with a fixed sampling ratio")
        self.pooler = pooler
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale

    def _axis(self, samples: AxisSamples, extent, dim_t):
        """1-D RoIAlign of the sinusoid along one axis for M boxes.

        Args:
            samples: RoIAlign's sampling points along the axis. extent: (M,) normalisation extent of the PE.
        Returns:
            (M, R, F) sum over the bin's samples of the interpolated sinusoid (zero for samples RoIAlign
            drops), divided by the grid; and (M, R) fraction of samples kept.
        """
        # Sinusoid of the 1-based cell index normalised by the extent (ImageSinePE), at both neighbours.
        dtype = extent.dtype
        norm = (self.scale / (extent + 1e-6))[:, None, None, None] / dim_t  # (M, 1, 1, F)
        odd = torch.arange(self.num_feats, device=extent.device) % 2 == 1

        def sinusoid(index):
            angle = (index.to(dtype)[..., None] + 1) * norm
            return torch.where(odd, angle.cos(), angle.sin())

        frac = samples.frac[..., None]
        value = sinusoid(samples.low) * (1 - frac) + sinusoid(samples.high) * frac
        value = value * samples.valid[..., None]
        grid = samples.low.shape[-1]
        return value.sum(2) / grid, samples.valid.sum(2).to(dtype) / grid

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
        sampling = roi_sampling(self.pooler, boxes, map_sizes)
        image = torch.arange(b, device=boxes.device).repeat_interleave(n)
        norm_extents = torch.stack([e.to(dtype) for e in extents])[sampling.levels, image]  # (M, 2)
        dim_t = self.temperature ** (
            2 * torch.div(torch.arange(self.num_feats, device=boxes.device), 2, rounding_mode="floor") / self.num_feats
        )
        y_sum, y_valid = self._axis(sampling.y, norm_extents[:, 0], dim_t)
        x_sum, x_valid = self._axis(sampling.x, norm_extents[:, 1], dim_t)
        return SeparableRoIPE(y_sum, x_valid, x_sum, y_valid)
