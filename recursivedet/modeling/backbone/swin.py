"""Swin Transformer (timm's) as the detection backbone of the official Sparse R-CNN / RecursiveDet code.

Paper Table 2 reports RecursiveDet with Swin-T and Swin-B backbones (with FPN), and RecursiveDet(AdaMixer) with
Swin-S. The official code (``projects/SparseRCNN/sparsercnn/swin_transformer.py`` of RecursiveDet and Sparse
R-CNN, config ``sparsercnn.swint.300pro.3x.yaml``) builds Swin-T with patch size 4, window 7, drop-path rate 0.2,
no absolute position embedding, outputs ``stage2``-``stage5`` (strides 4-32, 96-768 channels) each through its
own LayerNorm, nothing frozen (``FREEZE_AT = -1``), into detectron2's FPN with a max-pooled top level. Swin's own
detection configs use drop-path 0.2 for Swin-S and 0.3 for Swin-B (ImageNet-22k weights), AdaMixer's Swin-S 0.2.

Two things make timm's Swin the official detection backbone at any image size:
- ``always_partition=True``: every block keeps its 7x7 window and odd blocks their shift of 3, also where a map
  is smaller than a window (timm's classification default drops the shift there);
- :class:`PaddedShiftSwinBlock`: the official block pads the map to a multiple of the window and then shifts it
  (the attention mask is that of the padded map); timm shifts first and pads after. Both are the same when the
  map is a multiple of the window, and differ at the border otherwise, as at almost every detection input size.
"""

from __future__ import annotations

import os

import torch
from torch.nn import functional as F

from .timm_backbone import TimmBackbone, TimmModelError

__all__ = ["SWIN_VARIANTS", "PaddedShiftSwinBlock", "SwinBackbone"]

# timm model name and drop-path rate of each size (see the module docstring for where the rates come from).
SWIN_VARIANTS = {
    "T": ("swin_tiny_patch4_window7_224", 0.2),
    "S": ("swin_small_patch4_window7_224", 0.2),
    "B": ("swin_base_patch4_window7_224", 0.3),
}


def _swin_block_class():
    from timm.models.swin_transformer import SwinTransformerBlock

    return SwinTransformerBlock


class PaddedShiftSwinBlock(_swin_block_class()):
    """timm's ``SwinTransformerBlock`` with the official detection code's order: pad to a multiple of the window,
    then shift; same parameters and state-dict keys (an instance is made by class assignment)."""

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        from timm.models.swin_transformer import window_partition, window_reverse

        _, height, width, channels = x.shape
        wh, ww = self.window_size
        x = F.pad(x, (0, 0, 0, (-width) % ww, 0, (-height) % wh))
        padded_h, padded_w = x.shape[1], x.shape[2]
        shifted = any(self.shift_size)
        if shifted:
            x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1]), dims=(1, 2))
        windows = window_partition(x, self.window_size).view(-1, self.window_area, channels)
        windows = self.attn(windows, mask=self.get_attn_mask(x) if shifted else None)
        x = window_reverse(windows.view(-1, wh, ww, channels), self.window_size, padded_h, padded_w)
        if shifted:
            x = torch.roll(x, shifts=self.shift_size, dims=(1, 2))
        return x[:, :height, :width].contiguous()


class SwinBackbone(TimmBackbone):
    """Swin-T/S/B (``size``) as the official code's detection backbone; see the module docstring."""

    def __init__(
        self,
        size: str = "T",
        *,
        out_indices=(0, 1, 2, 3),
        pretrained: bool | str | os.PathLike = False,
        drop_path_rate: float | None = None,
        frozen_prefixes=(),
        name: str | None = None,
    ):
        """
        Args:
            size: "T", "S" or "B" (:data:`SWIN_VARIANTS`).
            out_indices: stages to return (0-3: strides 4-32, named res2-res5).
            pretrained: see :class:`TimmBackbone`; Microsoft's release files (``swin_tiny_patch4_window7_224.pth``
                etc.) and timm's load alike.
            drop_path_rate: None: the variant's rate.
            frozen_prefixes: see :class:`TimmBackbone` (the official Swin-T config freezes nothing).
            name: another timm Swin model instead of the variant's (e.g. a 22k-pretrained tag).
        """
        if size not in SWIN_VARIANTS:
            raise TimmModelError(f"Swin size must be one of {', '.join(SWIN_VARIANTS)}, got {size!r}")
        default_name, default_rate = SWIN_VARIANTS[size]
        super().__init__(
            name or default_name,
            out_indices,
            pretrained=pretrained,
            out_norm=True,
            frozen_prefixes=frozen_prefixes,
            drop_path_rate=default_rate if drop_path_rate is None else drop_path_rate,
            always_partition=True,
            strict_img_size=False,
        )

    def customize(self) -> None:
        block = _swin_block_class()
        for module in self.model.modules():
            if type(module) is block:
                module.__class__ = PaddedShiftSwinBlock
