"""Box helpers shared by the decoder, the criterion and inference.

Boxes inside the model are normalised (cx, cy, w, h) in [0, 1] relative to each image's own size
(not the padded batch size), as in the official RecursiveDet code.
"""

import torch
from torchvision.ops import box_convert

from recursivedet.errors import NonFiniteError


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


def check_finite_boxes(boxes: torch.Tensor, what: str) -> None:
    """Raise :class:`NonFiniteError` when ``boxes`` hold NaN or inf, before they become feature-map indices
    (where they would fail as an index error). One device synchronisation; skipped while tracing, scripting or
    compiling, which have no data-dependent branch to take.

    Args:
        what: the boxes, as the message names them, e.g. "boxes given to RoIAlign".
    """
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling():
        return
    finite = torch.isfinite(boxes).all(-1)
    if bool(finite.all()):
        return
    raise NonFiniteError(
        f"{int((~finite).sum())} of {finite.numel()} {what} are not finite (NaN or inf), so the model's weights or "
        "its input are not: training diverged (a lower optimizer.lr helps) or the checkpoint holds such weights"
    )
