"""One decoder stage Dec^t of Eq. 1: self-attention, dynamic interaction (one or two passes), FFN, heads."""

import math

import torch
from detectron2.modeling.box_regression import Box2BoxTransform
from torch import nn
from torch.nn import functional as F

from recursivedet.errors import ConfigValueError

from .box_utils import cxcywh_to_xyxy, inverse_sigmoid, xyxy_to_cxcywh
from .dynamic_conv import DynamicConv
from .linear import Linear
from .mlp import MLP
from .position_encoding import CenternessMask
from .self_attention import ProposalSelfAttention

BOX_REFINEMENTS = ("sigmoid", "deltas")

# Sparse R-CNN's box deltas: Faster R-CNN parameterisation with weights (2, 2, 1, 1).
_SPARSE_RCNN_DELTAS = Box2BoxTransform(weights=(2.0, 2.0, 1.0, 1.0), scale_clamp=math.log(100000.0 / 16))


def _head_block(dim: int) -> list[nn.Module]:
    return [Linear(dim, dim, bias=False), nn.LayerNorm(dim), nn.ReLU(inplace=True)]


class DecoderStage(nn.Module):
    """Parameters of one stage; RecSt reuses one instance for several stages (Sec. 3.2).

    Args:
        dim: model width c. num_heads: self-attention heads. ffn_dim: FFN width. dropout: dropout rate.
        dynamic_dim: d. pooler_resolution: R. num_classes: K (sigmoid focal classification).
        num_cls_layers / num_reg_layers: Linear-LN-ReLU blocks before the class / box predictors (1 / 3).
        box_pe_self_attention: bb-PE in self-attention (Sec. 3.3, Fig. 2b).
        box_pe_dynamic_conv: bb-PE in the dynamic conv (Eq. 4-5, Fig. 2c).
        centerness: cb-PE mode, "none" | "static" | "learnable" | "adjust" (Eq. 6, Table 5).
        dynamic_conv_pe_form: "per_channel" (acts) or "official" (removed by the dynamic conv's LayerNorm, with
            the centerness that weights it): see :mod:`~.dynamic_conv`.
        box_refinement: "sigmoid" (RecursiveDet code: b' = sigmoid(inverse_sigmoid(b) + delta)) or
            "deltas" (Sparse R-CNN code: Faster R-CNN deltas with weights (2, 2, 1, 1)).
        condition_dim: width of a per-image conditioning vector (0: none). With it, SiLU -> Linear(condition_dim,
            2c) gives a scale and shift per image, applied as q * (scale + 1) + shift to the input of the class
            and box branches only; the stage still returns the unmodulated object feature (DiffusionDet's time
            modulation, official ``block_time_mlp``).
        box_pe_min_size: lower bound on the normalised w and h that the dynamic-conv box PE divides by (Eq. 4:
            w_ref / w, h_ref / h); 0 leaves them as they are. Hosts whose proposals can have zero width
            (DiffusionDet's clamped noisy boxes) need it.
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        dynamic_dim: int = 64,
        pooler_resolution: int = 7,
        num_classes: int = 80,
        num_cls_layers: int = 1,
        num_reg_layers: int = 3,
        box_pe_self_attention: bool = False,
        box_pe_dynamic_conv: bool = False,
        centerness: str = "none",
        dynamic_conv_pe_form: str = "per_channel",
        box_refinement: str = "sigmoid",
        condition_dim: int = 0,
        box_pe_min_size: float = 0.0,
    ):
        super().__init__()
        if dim % 2:
            raise ConfigValueError(f"model width must be even (half encodes y, half x), got {dim}")
        if box_refinement not in BOX_REFINEMENTS:
            raise ConfigValueError(f"box_refinement must be one of {BOX_REFINEMENTS}, got {box_refinement!r}")
        if condition_dim < 0 or box_pe_min_size < 0:
            raise ConfigValueError(
                f"condition_dim and box_pe_min_size cannot be negative, got {condition_dim} and {box_pe_min_size}"
            )
        self.dim = dim
        self.box_refinement = box_refinement
        self.condition_dim = condition_dim
        self.box_pe_min_size = box_pe_min_size
        self.box_pe_self_attention = box_pe_self_attention
        if box_pe_self_attention:
            # Box sinusoid (4 x c/2 = 2c) -> MLP -> p (official: 512 -> 256 -> 256 at c = 256).
            self.box_pos_mlp = MLP(2 * dim, dim, dim, 2)
        self.self_attn = ProposalSelfAttention(dim, num_heads, dropout, box_pe=box_pe_self_attention)
        self.norm1 = nn.LayerNorm(dim)
        mask = None if centerness == "none" else CenternessMask(centerness, pooler_resolution, dim)
        self.dynamic_conv = DynamicConv(
            dim, dynamic_dim, pooler_resolution, box_pe_dynamic_conv, mask, pe_form=dynamic_conv_pe_form
        )
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = Linear(dim, ffn_dim)
        self.linear2 = Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.cls_layers = nn.Sequential(*[m for _ in range(num_cls_layers) for m in _head_block(dim)])
        self.reg_layers = nn.Sequential(*[m for _ in range(num_reg_layers) for m in _head_block(dim)])
        self.class_logits = Linear(dim, num_classes)
        self.box_delta = Linear(dim, 4)
        if condition_dim:
            self.condition_mlp = nn.Sequential(nn.SiLU(), Linear(condition_dim, 2 * dim))

    @property
    def uses_box_sine(self) -> bool:
        return self.box_pe_self_attention or self.dynamic_conv.box_pe

    def forward(self, features, boxes, roi_features, roi_pos=None, box_sine=None, passes: int = 1, condition=None):
        """Run the stage on B images with N proposals each.

        Args:
            features: (B, N, c) proposal features q^t.
            boxes: (B, N, 4) normalised (cx, cy, w, h) proposal boxes b^t (detached).
            roi_features: (B * N, S, c) RoI features f^t.
            roi_pos: pooled image PE p_f, (B * N, S, c) or a ``SeparableRoIPE``, when the dynamic conv uses the
                box PE.
            box_sine: (B, N, 2c) box sinusoid, when a box PE is on.
            passes: dynamic-conv passes (2 = RecDy: same Dyn, Out, residual and LayerNorm reused).
            condition: (B, condition_dim) per-image conditioning (needed when ``condition_dim`` > 0).
        Returns:
            class logits (B, N, K), boxes b^{t+1} (B, N, 4), object features q^{t+1} (B, N, c).
        """
        b, n, c = features.shape
        pos = self.box_pos_mlp(box_sine) if self.box_pe_self_attention else None
        x = self.norm1(features + self.dropout(self.self_attn(features, pos)))

        x = x.reshape(b * n, c)
        flat_boxes = boxes.reshape(b * n, 4)
        flat_sine = box_sine.reshape(b * n, -1) if box_sine is not None else None
        roi_pos = self.dynamic_conv.project_roi_position(roi_pos) if self.dynamic_conv.box_pe else None
        pe_boxes = flat_boxes
        if self.box_pe_min_size > 0:
            pe_boxes = torch.cat((flat_boxes[:, :2], flat_boxes[:, 2:].clamp(min=self.box_pe_min_size)), dim=1)
        for _ in range(passes):
            update = self.dynamic_conv(x, roi_features, roi_pos, flat_sine, pe_boxes)
            x = self.norm2(x + self.dropout(update))

        x = self.norm3(x + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(x))))))
        # x itself without a conditioning: the two branches' gradients then add into x in the same order as
        # before conditionings existed, so the hosts without one train bit for bit as they did.
        head_input = self.modulate(x.view(b, n, c), condition).view(b * n, c) if self.condition_dim else x
        if condition is not None and not self.condition_dim:
            raise ValueError("this stage takes no conditioning (condition_dim=0)")
        logits = self.class_logits(self.cls_layers(head_input))
        deltas = self.box_delta(self.reg_layers(head_input))
        new_boxes = self.refine(flat_boxes, deltas)
        return logits.view(b, n, -1), new_boxes.view(b, n, 4), x.view(b, n, c)

    def modulate(self, features: torch.Tensor, condition: torch.Tensor | None) -> torch.Tensor:
        """(B, N, c) object features -> the class/box branch input, (B, N, c): q * (scale + 1) + shift with one
        (scale, shift) per image from ``condition`` (B, condition_dim); q itself without conditioning."""
        if not self.condition_dim:
            if condition is not None:
                raise ValueError("this stage takes no conditioning (condition_dim=0)")
            return features
        if condition is None:
            raise ValueError(f"this stage needs a (B, {self.condition_dim}) conditioning")
        scale, shift = self.condition_mlp(condition).chunk(2, dim=-1)
        return features * (scale[:, None] + 1) + shift[:, None]

    def refine(self, boxes: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """(M, 4) normalised cxcywh boxes + (M, 4) predicted deltas -> (M, 4) refined boxes."""
        if self.box_refinement == "sigmoid":
            return (inverse_sigmoid(boxes) + deltas).sigmoid()
        # The deltas are scale-invariant, so applying them to normalised boxes equals applying them in
        # pixels and normalising afterwards. detectron2 decodes in float32; the boxes keep their dtype.
        return xyxy_to_cxcywh(_SPARSE_RCNN_DELTAS.apply_deltas(deltas, cxcywh_to_xyxy(boxes))).to(boxes.dtype)
