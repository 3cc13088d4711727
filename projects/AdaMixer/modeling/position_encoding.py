"""Sinusoids of AdaMixer's query positions and of its sampling points.

- :func:`xyzr_sine_embedding`: AdaMixer's positional embedding of a query (official ``position_embedding``):
  each of x / 1000, y / 1000, z, r -> ``num_feats`` interleaved sin / cos features (temperature 10000, no
  2 pi scale), in the order (x, y, z, r). It is added to the self-attention input; RecursiveDet's bb-PE in
  self-attention feeds it to an MLP first (:class:`~.self_attention.IoFSelfAttention`).
- :func:`point_sine_embedding`: the RecursiveDet image PE p_f at a sampling point (see
  :mod:`~.mixing_position`).

Both reuse the library's box sinusoid (:func:`recursivedet.modeling.position_encoding.box_sine_embedding`).
"""

import math

import torch

from recursivedet.modeling.position_encoding import box_sine_embedding

# Official scaling of (x, y, z, r) before the sinusoid: pixels / 1000 for the centre, log2 units for z and r.
_XYZR_SCALE = (1000.0, 1000.0, 1.0, 1.0)


def xyzr_sine_embedding(xyzr: torch.Tensor, num_feats: int) -> torch.Tensor:
    """(..., 4) (x, y, z, r) -> (..., 4 * num_feats), x part first (official: num_feats = c / 4 = 64).

    The library's box sinusoid orders its input's coordinates (1, 0, 2, 3); handing it (y, x, z, r) gives
    AdaMixer's (x, y, z, r) order.
    """
    scaled = xyzr / xyzr.new_tensor(_XYZR_SCALE)
    return box_sine_embedding(scaled[..., [1, 0, 2, 3]], num_feats, scale=1.0)


def point_sine_embedding(points: torch.Tensor, num_feats: int) -> torch.Tensor:
    """(..., 2) normalised (x, y) in [0, 1] -> (..., 2 * num_feats): Sinusoidal(y) then Sinusoidal(x), the
    scale (2 pi) and temperature of the library's box and image sine PEs, so that p_f and the box PE p_k
    (Eq. 5) share one coordinate frame."""
    padded = torch.cat((points, torch.zeros_like(points)), dim=-1)  # (x, y, 0, 0): the w, h part is dropped
    return box_sine_embedding(padded, num_feats, scale=2 * math.pi)[..., : 2 * num_feats]
