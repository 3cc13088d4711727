"""One AdaMixer decoder stage (AdaMixer Sec. 3, Fig. 2; official ``AdaMixerDecoderStage``), Dec^t of RecursiveDet
Eq. 1 on this host: position-aware self-attention with the IoF bias, adaptive 3D sampling, adaptive mixing
(one or, with RecDy, more passes), FFN, class and box heads, AdaMixer's box update.

Parameters at c = 256, 8 heads, FFN 2048, G = 4, P_in = 32, P_out = 128, 80 classes (official code, RecursiveDet
Table 1 row "AdaMixer"): MSA 263,168; Dyn 8,421,376; Out 8,388,864; heads 154,196; others 1,151,104 (FFN, the
three LayerNorms, the offset generator); IoF tau 8; total 18,378,716.
"""

import torch
from torch import nn
from torch.nn import functional as F

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.box_utils import xyxy_to_cxcywh
from recursivedet.modeling.decoder import focal_prior_bias
from recursivedet.modeling.linear import Linear

from .boxes import refine_xyzr, xyzr_to_xyxy
from .mixing import AdaptiveMixing
from .mixing_position import MixingPositionEncoding
from .sampling import AdaptiveSampling
from .self_attention import IoFSelfAttention


def _head_block(dim: int) -> list[nn.Module]:
    # AdaMixer's head blocks keep the Linear's bias (Sparse R-CNN's drop it).
    return [Linear(dim, dim), nn.LayerNorm(dim), nn.ReLU(inplace=True)]


class AdaMixerStage(nn.Module):
    """Parameters of one stage; RecSt reuses one instance for several stages (RecursiveDet Sec. 3.2).

    Args:
        dim: query and feature width c. num_heads: self-attention heads. ffn_dim: FFN width. dropout: rate.
        num_groups: G. in_points: P_in sampled per group. out_points: P_out of the spatial mixing.
        num_classes: K (sigmoid focal classification).
        num_cls_layers / num_reg_layers: Linear-LN-ReLU blocks before the class / box predictors (1 / 1).
        box_pe_self_attention: RecursiveDet bb-PE in self-attention (:class:`~.self_attention.IoFSelfAttention`).
        box_pe_dynamic_conv: RecursiveDet bb-PE in the mixing (:mod:`~.mixing_position`).
        centerness: only "none": cb-PE does not apply to this host (its sampling points leave the box).
        gather_sampling: sample by weighted row gathers (same numbers, faster); False: ``F.grid_sample`` per level
            as the official code (:class:`~.sampling.AdaptiveSampling`).
        mixing_chunk_queries: bounds the mixing's intermediates to what this many queries make at once (same
            numbers, less memory traffic; None: no bound; :class:`~.mixing.AdaptiveMixing`).
    """

    def __init__(
        self,
        *,
        dim: int = 256,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        num_groups: int = 4,
        in_points: int = 32,
        out_points: int = 128,
        num_classes: int = 80,
        num_cls_layers: int = 1,
        num_reg_layers: int = 1,
        box_pe_self_attention: bool = False,
        box_pe_dynamic_conv: bool = False,
        centerness: str = "none",
        gather_sampling: bool = True,
        mixing_chunk_queries: int | None = 128,
    ):
        super().__init__()
        if centerness != "none":
            raise ConfigValueError(
                f"model.decoder.stage.centerness={centerness!r}: the centerness PE (cb-PE) does not apply to the "
                "AdaMixer host, whose sampling points leave the box (RecursiveDet Sec. 4.2); use 'none'"
            )
        if dim % num_groups or dim % 4:
            raise ConfigValueError(f"model.decoder.stage.dim {dim} must divide by 4 and by num_groups {num_groups}")
        if mixing_chunk_queries is not None and mixing_chunk_queries < 1:
            raise ConfigValueError(
                f"model.decoder.stage.mixing_chunk_queries must be None or at least 1, got {mixing_chunk_queries}"
            )
        self.dim = dim
        self.self_attn = IoFSelfAttention(dim, num_heads, dropout, box_pe=box_pe_self_attention)
        self.sampling = AdaptiveSampling(dim, num_groups, in_points, gather=gather_sampling)
        self.adaptive_mixing = AdaptiveMixing(dim, num_groups, in_points, out_points, mixing_chunk_queries)
        self.mixing_pe = MixingPositionEncoding(dim) if box_pe_dynamic_conv else None
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = Linear(dim, ffn_dim)
        self.linear2 = Linear(ffn_dim, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.cls_layers = nn.Sequential(*[m for _ in range(num_cls_layers) for m in _head_block(dim)])
        self.reg_layers = nn.Sequential(*[m for _ in range(num_reg_layers) for m in _head_block(dim)])
        self.class_logits = Linear(dim, num_classes)
        self.box_delta = Linear(dim, 4)

    @torch.no_grad()
    def reset_parameters(self, prior_prob: float = 0.01):
        """Official init: every Linear xavier-uniform (bias as PyTorch initialises it), the class bias at the
        focal prior, the box-delta layer zero (each stage starts as the identity), IoF tau U(0, 4), the offset
        generator as :class:`~.sampling.AdaptiveSampling`, the Dyn weight zero."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
                nn.init.xavier_uniform_(m.weight)
        nn.init.constant_(self.class_logits.bias, focal_prior_bias(prior_prob))
        nn.init.zeros_(self.box_delta.weight)
        nn.init.zeros_(self.box_delta.bias)
        nn.init.uniform_(self.self_attn.iof_tau, 0.0, 4.0)
        self.sampling.reset_parameters()
        nn.init.zeros_(self.adaptive_mixing.dynamic_layer.weight)

    def forward(self, features, strides, query, xyzr, image_whwh, passes: int = 1):
        """Run the stage on B images with N queries each.

        Args:
            features: per level (B, c, H_l, W_l) maps. strides: their strides in pixels.
            query: (B, N, c) query contents q^t.
            xyzr: (B, N, 4) query positions b^t (detached).
            image_whwh: (B, 4) image sizes (w, h, w, h) in pixels (used by the mixing box PE).
            passes: adaptive-mixing passes (2 = RecDy: the features sampled once, Dyn, Out and the
                residual LayerNorm reused; the second pass generates its mixers from the first pass's output).
        Returns:
            class logits (B, N, K), positions b^{t+1} (B, N, 4) (x, y, z, r), query contents q^{t+1} (B, N, c).
        """
        q = self.self_attn(query, xyzr)
        sampled, points = self.sampling(features, strides, q, xyzr)
        boxes = None
        if self.mixing_pe is not None:
            boxes = xyxy_to_cxcywh(xyzr_to_xyxy(xyzr) / image_whwh[:, None, :])
        for _ in range(passes):
            position = self.mixing_pe(q, boxes, points, image_whwh[:, :2]) if boxes is not None else None
            q = self.norm2(q + self.dropout(self.adaptive_mixing(sampled, q, position)))
        q = self.norm3(q + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(q))))))
        logits = self.class_logits(self.cls_layers(q))
        delta = self.box_delta(self.reg_layers(q))
        return logits, refine_xyzr(xyzr, delta), q
