"""AdaMixer's box parameterisation (AdaMixer Sec. 3.1, official ``decode_box`` and ``refine_xyzr``).

A query's position is (x, y, z, r) in pixels of the (unpadded) input image: centre (x, y), scale
z = log2 sqrt(w h) and aspect ratio r = log2(h / w), so w = 2^(z - r / 2) and h = 2^(z + r / 2).
"""

import torch


def xyzr_to_xyxy(xyzr: torch.Tensor) -> torch.Tensor:
    """(..., 4) (x, y, z, r) -> (..., 4) pixel (x1, y1, x2, y2)."""
    xy, z, r = xyzr[..., 0:2], xyzr[..., 2:3], xyzr[..., 3:4]
    wh = 2.0 ** torch.cat((z - 0.5 * r, z + 0.5 * r), dim=-1)
    return torch.cat((xy - 0.5 * wh, xy + 0.5 * wh), dim=-1)


def xyxy_to_xyzr(xyxy: torch.Tensor) -> torch.Tensor:
    """(..., 4) pixel (x1, y1, x2, y2) -> (..., 4) (x, y, z, r) (official ``_decode_init_proposals``)."""
    xy = 0.5 * (xyxy[..., 0:2] + xyxy[..., 2:4])
    wh = xyxy[..., 2:4] - xyxy[..., 0:2]
    z = wh.prod(-1, keepdim=True).sqrt().log2()
    r = (wh[..., 1:2] / wh[..., 0:1]).log2()
    return torch.cat((xy, z, r), dim=-1)


def box_size(xyzr: torch.Tensor) -> torch.Tensor:
    """(..., 4) (x, y, z, r) -> (..., 2) pixel (w, h)."""
    z, r = xyzr[..., 2:3], xyzr[..., 3:4]
    return 2.0 ** torch.cat((z - 0.5 * r, z + 0.5 * r), dim=-1)


def refine_xyzr(xyzr: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """AdaMixer's box update: x, y move by (dx, dy) * 2^z (in units of the box scale); z, r add their deltas.

    Args:
        xyzr: (..., 4) boxes; delta: (..., 4) predicted (dx, dy, dz, dr).
    Returns:
        (..., 4) refined (x, y, z, r).
    """
    xy = xyzr[..., 0:2] + delta[..., 0:2] * 2.0 ** xyzr[..., 2:3]
    return torch.cat((xy, xyzr[..., 2:4] + delta[..., 2:4]), dim=-1)
