"""Positional encodings of RecursiveDet (paper Sec. 3.3-3.4).

- :func:`box_sine_embedding`: the sinusoid of a box (y, x, w, h), used by the bounding-box PE (bb-PE) of
  the self-attention (Fig. 2b) and, through its (y, x) half, of the dynamic conv (Eq. 5).
- :class:`ImageSinePE`: DETR's 2-D sine embedding of each FPN level, pooled per RoI element to give p_f.
- :class:`CenternessMask`: the 7x7 centerness of Eq. 6 (cb-PE), static, learnable or adjusted per box.

Sizes follow the model width ``c``: the official code fixes 128 frequencies per coordinate, which is
``c / 2`` at its width 256; here every size is derived from ``c`` so narrow models work too.
"""

import math

import torch
from torch import nn

from recursivedet.errors import ConfigValueError

from .linear import Linear

CENTERNESS_MODES = ("none", "static", "learnable", "adjust")


def _frequencies(num_feats: int, temperature: float, device) -> torch.Tensor:
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=device)
    return temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)


def _interleave_sin_cos(pos: torch.Tensor) -> torch.Tensor:
    """(..., F) angles -> (..., F) with sin on even and cos on odd frequencies, interleaved."""
    return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)


def box_sine_embedding(
    boxes: torch.Tensor, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi
) -> torch.Tensor:
    """Sinusoidal embedding of normalised boxes.

    Args:
        boxes: (..., 4) normalised (cx, cy, w, h).
        num_feats: frequencies per coordinate (official: 128 = c / 2).
    Returns:
        (..., 4 * num_feats) ordered (y, x, w, h) as in the official code; its first ``2 * num_feats``
        entries (y then x) are Sinusoidal(y), Sinusoidal(x) of Eq. 5.
    """
    dim_t = _frequencies(num_feats, temperature, boxes.device)
    angles = boxes[..., [1, 0, 2, 3], None] * scale / dim_t  # (..., 4, F)
    return _interleave_sin_cos(angles).flatten(-2)


class ImageSinePE(nn.Module):
    """DETR's normalised 2-D sine embedding of a feature map (per FPN level, no padding mask).

    The official code evaluates it over the whole padded map of each level; so does this.
    Output channels: ``2 * num_feats`` = c, y half first.
    """

    def __init__(self, num_feats: int, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_feats = num_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, feature: torch.Tensor, extents: torch.Tensor | None = None) -> torch.Tensor:
        """Positional map of a (B, C, H, W) feature map -> (B, 2 * num_feats, H, W), y half first.

        Args:
            extents: optional (B, 2) height and width, in cells of this map, over which each image's
                coordinates are normalised; default the whole map. Passing each image's own padded size
                makes an image's encoding independent of the other images in its batch.
        """
        b, _, h, w = feature.shape
        device = feature.device
        if extents is None:
            extents = torch.tensor([[h, w]], dtype=torch.float32, device=device).expand(b, 2)
        eps = 1e-6
        rows = torch.arange(1, h + 1, dtype=torch.float32, device=device)
        cols = torch.arange(1, w + 1, dtype=torch.float32, device=device)
        y = rows[None, :] / (extents[:, 0:1] + eps) * self.scale  # (B, H)
        x = cols[None, :] / (extents[:, 1:2] + eps) * self.scale  # (B, W)
        dim_t = _frequencies(self.num_feats, self.temperature, device)
        pos_y = _interleave_sin_cos(y[..., None] / dim_t)  # (B, H, F)
        pos_x = _interleave_sin_cos(x[..., None] / dim_t)  # (B, W, F)
        f = self.num_feats
        pos = torch.cat((pos_y[:, :, None, :].expand(b, h, w, f), pos_x[:, None, :, :].expand(b, h, w, f)), -1)
        return pos.permute(0, 3, 1, 2).to(feature.dtype)


def centerness_grid(resolution: int, offsets: torch.Tensor | None = None) -> torch.Tensor:
    """Centerness of the ``resolution x resolution`` RoI bins (Eq. 6).

    Follows the official code rather than Eq. 6 as printed: bin centres (i + 0.5) are measured against
    the pooler size, so border values are small but not zero.

    Args:
        offsets: optional (M, 2) per-box (p_x, p_y) of the 'adjust' variant: the distances to the left,
            right, top and bottom are scaled by exp(-(1 + p)) and exp(-(1 - p)) (the official code's unused
            sketch), which moves the peak towards a side while keeping the mask in (0, 1].
    Returns:
        (R, R) mask, or (M, R, R) with ``offsets``.
    """
    device = offsets.device if offsets is not None else None
    centres = torch.arange(resolution, dtype=torch.float32, device=device) + 0.5
    top, left = centres[:, None], centres[None, :]
    bottom, right = resolution - top, resolution - left
    if offsets is not None:
        px = offsets[:, 0, None, None]
        py = offsets[:, 1, None, None]
        top, bottom = top * torch.exp(-(1 + py)), bottom * torch.exp(-(1 - py))
        left, right = left * torch.exp(-(1 + px)), right * torch.exp(-(1 - px))
    vertical = torch.minimum(top, bottom) / torch.maximum(top, bottom)
    horizontal = torch.minimum(left, right) / torch.maximum(left, right)
    return torch.sqrt(vertical * horizontal)


class CenternessMask(nn.Module):
    """Centerness-based PE (cb-PE, Sec. 3.4, Table 5): a weight per RoI element.

    Modes: ``static`` (Eq. 6, a buffer), ``learnable`` (a parameter initialised from Eq. 6), ``adjust``
    (Eq. 6 with its peak moved per box by offsets predicted from the proposal feature; the paper gives no
    formula: p = tanh(Linear(q)) in (-1, 1)^2 feeds :func:`centerness_grid`; the Linear is zero-initialised
    so training starts from the static mask).
    """

    def __init__(self, mode: str, resolution: int, dim: int):
        super().__init__()
        if mode not in CENTERNESS_MODES[1:]:
            raise ConfigValueError(f"centerness mode must be one of {CENTERNESS_MODES[1:]}, got {mode!r}")
        self.mode = mode
        self.resolution = resolution
        mask = centerness_grid(resolution)
        if mode == "learnable":
            self.mask = nn.Parameter(mask)
        else:
            self.register_buffer("mask", mask, persistent=False)
        if mode == "adjust":
            self.center_offset = Linear(dim, 2)
        self.reset_parameters()

    def reset_parameters(self):
        """Start from Eq. 6 (the learnable mask) and from the static peak (zero offsets)."""
        with torch.no_grad():
            self.mask.copy_(centerness_grid(self.resolution))
        if self.mode == "adjust":
            nn.init.zeros_(self.center_offset.weight)
            nn.init.zeros_(self.center_offset.bias)

    def forward(self, proposal_features: torch.Tensor) -> torch.Tensor:
        """(M, c) proposal features -> (M, R*R) or (1, R*R) mask over the flattened RoI bins."""
        if self.mode == "adjust":
            offsets = torch.tanh(self.center_offset(proposal_features))
            return centerness_grid(self.resolution, offsets).flatten(1).to(proposal_features.dtype)
        return self.mask.flatten()[None].to(proposal_features.dtype)
