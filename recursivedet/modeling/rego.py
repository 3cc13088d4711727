"""REGO, the recurrent glimpse-based decoder (Chen, Zhang, Tao: *Recurrent Glimpse-based Decoder for
Detection with Transformer*, CVPR 2022): a refinement stage run after the detector's decoder.

Stage i of K (REGO Sec. 4.1-4.2, Alg. 1) takes the previous boxes O_box(i-1) and states H_dec(i-1):

1. glimpse RoIs R(O_box(i-1), alpha(i)): the boxes enlarged by alpha(i) around their centres (Eq. 7);
2. glimpse features V(i) = f_ext(X, R): RoIAlign 7x7 on the FPN levels, then one token per box;
3. H_g(i) = A(V(i), H_dec(i-1)) (Eq. 6): 2 transformer decoder layers (Sec. 4.3), glimpse tokens as queries
   (self-attention among them, then cross-attention to H_dec(i-1), then an FFN);
4. H_dec(i) = [H_g(i), H_dec(i-1)] (Eq. 5): the state grows by c per stage (c, 2c, 3c, ...);
5. O_cls(i) = F_cls(H_dec(i)), O_box(i) = F_box(H_dec(i)) + O_box(i-1) (Eq. 4).

H_dec(0) and O_box(0) are the decoder's last object features and boxes. alpha = (K, K-1, ..., 1) (Sec. 4.3)
times a glimpse scale (Table 3). Every stage has its own weights and no gradient flows into the boxes of
the previous stage (Appendix A.1).

Where the paper is silent this follows the official code (zhechen/Deformable-DETR-REGO):
- the enlarged box keeps its centre; its w and h are capped at 1 (the image size, normalised units);
- f_ext after RoIAlign: a grouped conv whose kernel covers the 7x7 window, then LayerNorm, ReLU, Linear,
  LayerNorm (one c-d token per box, not 49 tokens);
- keys and values: H_dec(i-1) projected back to c by Linear + LayerNorm (the LayerNorm of Sec. 4.3);
- the decoder layers are DETR's: post-norm, no positional embeddings, plus DETR's decoder LayerNorm on each
  layer's output;
- F_cls and F_box read each layer's output concatenated with the detached H_dec(i-1), fused back to c by a
  per-layer Linear + LayerNorm; a stage's layers share its class Linear and 3-layer box MLP, whose last
  layer starts at zero (a stage starts as the identity);
- "+" in Eq. 4 is a sum in inverse-sigmoid space, accumulated over the layers of a stage.
The official code also adds dilated-conv context to the feature maps before pooling; neither paper
describes it, and it is not used here.
"""

import math
from collections.abc import Sequence

import torch
from torch import nn

from recursivedet.errors import ConfigValueError

from .box_utils import cxcywh_to_xyxy, inverse_sigmoid
from .linear import Linear
from .mlp import MLP


def glimpse_ratios(num_stages: int, glimpse_scale: float = 1.0, alphas: Sequence[float] | None = None) -> list[float]:
    """Enlargement ratios alpha(1..K) (REGO Sec. 4.3): (K, ..., 2, 1) unless given, times the glimpse scale
    of Table 3 (e.g. K = 3 at 2x: 6, 4, 2). K = 0 (no REGO) gives none."""
    if num_stages < 0:
        raise ConfigValueError(f"REGO's number of stages must be >= 0, got num_stages={num_stages}")
    numbers = alphas is None or (
        not isinstance(alphas, str) and all(isinstance(a, int | float) and not isinstance(a, bool) for a in alphas)
    )
    if not numbers:
        raise ConfigValueError(
            f"model.rego.alphas must be null or a list of numbers, e.g. model.rego.alphas=[1,1,1] (quoted in the "
            f"shell), got {alphas!r}"
        )
    base = list(range(num_stages, 0, -1)) if alphas is None else [float(a) for a in alphas]
    if len(base) != num_stages:
        raise ConfigValueError(f"REGO alphas {base} must give one ratio per stage ({num_stages})")
    if glimpse_scale <= 0 or min(base, default=1) <= 0:
        raise ConfigValueError(f"REGO ratios must be positive, got alphas={base}, glimpse_scale={glimpse_scale}")
    return [float(a * glimpse_scale) for a in base]


def enlarge_boxes(boxes: torch.Tensor, alpha: float) -> torch.Tensor:
    """R of REGO Eq. 7: (..., 4) normalised (cx, cy, w, h) boxes -> the same centres with w and h times
    alpha, each capped at 1 (the image's size, as in the official code)."""
    return torch.cat([boxes[..., :2], (boxes[..., 2:] * alpha).clamp(max=1.0)], dim=-1)


class GlimpseEncoder(nn.Module):
    """f_ext of REGO Eq. 7 after RoIAlign: (M, c, R, R) glimpse -> (M, c), one token per box.

    The grouped conv's kernel covers the whole R x R window, so it sees the glimpse's layout at a fraction
    (1 / groups) of a dense Linear's parameters.
    """

    def __init__(self, dim: int, resolution: int, groups: int):
        super().__init__()
        if dim % groups:
            raise ConfigValueError(f"REGO glimpse_groups {groups} must divide the width {dim}")
        self.conv = nn.Conv2d(dim, dim, kernel_size=resolution, groups=groups)
        self.norm1 = nn.LayerNorm(dim)
        self.linear = Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, glimpses: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm1(self.conv(glimpses).flatten(1)))
        return self.norm2(self.linear(x))


class GlimpseStage(nn.Module):
    """One REGO stage (Alg. 1), with its own weights (Appendix A.1).

    Args:
        dim: model width c. state_dim: width of H_dec(i-1), c * i for the i-th stage (1-based).
        num_heads, ffn_dim, dropout: of the decoder layers. num_layers: decoder layers (2, Sec. 4.3).
        resolution: RoIAlign output size R (7). groups: groups of the glimpse conv (official: 4).
        num_classes: object classes (sigmoid focal classification).
    """

    def __init__(
        self,
        *,
        dim: int,
        state_dim: int,
        num_heads: int,
        ffn_dim: int,
        dropout: float,
        num_layers: int,
        resolution: int,
        groups: int,
        num_classes: int,
    ):
        super().__init__()
        self.glimpse = GlimpseEncoder(dim, resolution, groups)
        self.state_proj = nn.Sequential(Linear(state_dim, dim, bias=False), nn.LayerNorm(dim))
        # Sequence-first on purpose: with batch_first, PyTorch's attention takes a fused inference fast path
        # in eval mode, which FLOP counters do not see.
        self.layers = nn.ModuleList(
            nn.TransformerDecoderLayer(dim, num_heads, ffn_dim, dropout) for _ in range(num_layers)
        )
        self.output_norm = nn.LayerNorm(dim)
        self.fusers = nn.ModuleList(
            nn.Sequential(Linear(dim + state_dim, dim, bias=False), nn.LayerNorm(dim)) for _ in range(num_layers)
        )
        self.class_logits = Linear(dim, num_classes)
        self.box_delta = MLP(dim, dim, 4, 3)

    def forward(self, glimpses: torch.Tensor, boxes: torch.Tensor, state: torch.Tensor):
        """Refine N boxes in each of B images.

        Args:
            glimpses: (B * N, c, R, R) RoIAlign features of the enlarged boxes.
            boxes: (B, N, 4) O_box(i-1), normalised (cx, cy, w, h), detached.
            state: (B, N, state_dim) H_dec(i-1).
        Returns:
            list over the decoder layers of (class logits (B, N, num_classes), boxes (B, N, 4)), the last being
            (O_cls(i), O_box(i)); and H_dec(i) = [H_g(i), H_dec(i-1)], (B, N, c + state_dim).
        """
        b, n, _ = boxes.shape
        x = self.glimpse(glimpses).view(b, n, -1).transpose(0, 1)  # V(i) as queries, (N, B, c)
        memory = self.state_proj(state).transpose(0, 1)  # keys and values, (N, B, c)
        # The heads read the previous state without sending gradients into it (official code); the state
        # still learns through the keys and values.
        fixed_state = state.detach()
        reference = inverse_sigmoid(boxes)
        outputs = []
        for layer, fuser in zip(self.layers, self.fusers, strict=True):
            x = layer(x, memory)
            glimpse_state = self.output_norm(x).transpose(0, 1)  # H_g(i) after this layer, (B, N, c)
            fused = fuser(torch.cat([glimpse_state, fixed_state], dim=-1))
            reference = reference + self.box_delta(fused)
            outputs.append((self.class_logits(fused), reference.sigmoid()))
        return outputs, torch.cat([glimpse_state, state], dim=-1)


class RecurrentGlimpseDecoder(nn.Module):
    """REGO's K stages (Sec. 4, Fig. 2), run by the meta-architecture after its decoder.

    Args:
        dim: model width c (the decoder's: its object features are H_dec(0), the FPN maps give glimpses).
        num_classes: object classes. num_heads, ffn_dim, dropout: of the glimpse decoder layers.
        pooler_resolution: RoIAlign output size of the pooler that extracts glimpses (7).
        num_stages: K (Table 2; 3 by default). 0: no REGO, the meta-architecture then runs without it
            (so every config can carry the REGO node with its sizes, and ``model.rego.num_stages=3`` adds it).
        glimpse_scale: multiplies every ratio (Table 3; 1.0).
        alphas: per-stage ratios before the glimpse scale; None = (K, ..., 2, 1) (Sec. 4.3).
        num_layers: decoder layers per stage (2, Sec. 4.3).
        glimpse_groups: groups of the glimpse conv (official code: 4).
        aux_losses: also supervise the outputs of the earlier decoder layers of each stage. The paper
            applies such auxiliary losses (Sec. 4.3); the official code computes them but gives them no
            weight (their keys match no loss weight), so the released models were trained without them.
            Default False, as trained by the official code.
        at_inference: use REGO's last stage as the model's output at inference; False skips REGO at
            inference (Appendix A.2, Table 4: trained with REGO, inferred without).
        prior_prob: focal-loss prior of the class bias (0.01).
    """

    def __init__(
        self,
        *,
        dim: int,
        num_classes: int,
        num_heads: int = 8,
        ffn_dim: int = 2048,
        dropout: float = 0.0,
        pooler_resolution: int = 7,
        num_stages: int = 3,
        glimpse_scale: float = 1.0,
        alphas: Sequence[float] | None = None,
        num_layers: int = 2,
        glimpse_groups: int = 4,
        aux_losses: bool = False,
        at_inference: bool = True,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        if num_layers < 1:
            raise ConfigValueError(f"REGO needs at least one decoder layer per stage, got num_layers={num_layers}")
        self.alphas = glimpse_ratios(num_stages, glimpse_scale, alphas)
        self.dim = dim
        self.resolution = pooler_resolution
        self.stages = nn.ModuleList(
            GlimpseStage(
                dim=dim,
                state_dim=dim * (i + 1),
                num_heads=num_heads,
                ffn_dim=ffn_dim,
                dropout=dropout,
                num_layers=num_layers,
                resolution=pooler_resolution,
                groups=glimpse_groups,
                num_classes=num_classes,
            )
            for i in range(num_stages)
        )
        self.aux_losses = aux_losses
        self.at_inference = at_inference
        self._reset_parameters(prior_prob)

    def _reset_parameters(self, prior_prob: float):
        # xavier on every weight of dim > 1 (as DETR's transformer and the host decoder), focal prior on the
        # class bias, zero last box layer so that every stage starts from the boxes it is given.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        bias = -math.log((1 - prior_prob) / prior_prob)
        for stage in self.stages:
            nn.init.constant_(stage.class_logits.bias, bias)
            nn.init.zeros_(stage.box_delta.layers[-1].weight)
            nn.init.zeros_(stage.box_delta.layers[-1].bias)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def forward(self, features, pool, boxes, states, whwh):
        """Run the K stages.

        Args:
            features: list of FPN maps (B, c, H_l, W_l) in the pooler's level order.
            pool: ``pool(features, pixel_boxes)`` -> (B * N, R * R, c) RoI features of (B, N, 4) pixel xyxy boxes,
                R = ``pooler_resolution`` (the decoder's :meth:`~recursivedet.modeling.decoder.RecursiveDecoder.pool`).
            boxes: (B, N, 4) O_box(0), the decoder's last normalised (cx, cy, w, h) boxes.
            states: (B, N, c) H_dec(0), the decoder's last object features.
            whwh: (B, 4) image sizes (w, h, w, h) in pixels.
        Returns:
            list over the K stages of lists over their decoder layers of (class logits (B, N, num_classes), boxes
            (B, N, 4)); each stage's last pair is its output (O_cls(i), O_box(i)).
        """
        outputs = []
        for stage, alpha in zip(self.stages, self.alphas, strict=True):
            boxes = boxes.detach()  # Appendix A.1: no gradient into the previous stage's outputs
            glimpse_boxes = cxcywh_to_xyxy(enlarge_boxes(boxes, alpha)) * whwh[:, None, :]
            glimpses = pool(features, glimpse_boxes)
            if glimpses.shape[1] != self.resolution**2:
                raise ConfigValueError(
                    f"REGO expects {self.resolution}x{self.resolution} glimpses, "
                    f"the pooler gives {glimpses.shape[1]} bins"
                )
            glimpses = glimpses.transpose(1, 2).unflatten(2, (self.resolution, self.resolution))  # (M, c, R, R)
            layer_outputs, states = stage(glimpses, boxes, states)
            outputs.append(layer_outputs)
            boxes = layer_outputs[-1][1]
        return outputs
