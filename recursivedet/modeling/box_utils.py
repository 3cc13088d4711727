"""Box helpers shared by the decoder, the criterion and inference.

Boxes inside the model are normalised (cx, cy, w, h) in [0, 1] relative to each image's own size
(not the padded batch size), as in the official RecursiveDet code.
"""

import torch
from torchvision.ops import box_convert


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """log(x / (1 - x)) with both terms clamped at ``eps`` (official code's eps, which keeps the initial
    full-image boxes (w = h = 1) finite)."""
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, in_fmt="cxcywh", out_fmt="xyxy")


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    return box_convert(boxes, in_fmt="xyxy", out_fmt="cxcywh")


def image_whwh(image_sizes, device) -> torch.Tensor:
    """(B, 4) tensor of (w, h, w, h) for a list of (h, w) image sizes."""
    sizes = torch.as_tensor([list(s) for s in image_sizes], dtype=torch.float32, device=device)
    return sizes[:, [1, 0, 1, 0]]
