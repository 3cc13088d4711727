"""The dynamic interaction of Sparse R-CNN with RecursiveDet's position-aware variant (Fig. 2c).

One call is one dynamic-conv pass; RecDy (Sec. 3.2) calls the same module twice per stage.
"""

import torch
from torch import nn
from torch.nn import functional as F

from recursivedet.errors import ConfigValueError

from .linear import Linear, linear
from .mlp import MLP
from .position_encoding import CenternessMask


class DynamicConv(nn.Module):
    """Dyn (Eq. 2) -> two 1x1 dynamic convs -> Out (Eq. 3), optionally with the box PE of Eq. 4-5.

    Args:
        dim: model width c.
        dynamic_dim: hidden width d of the bottleneck (official 64).
        pooler_resolution: RoI size R (official 7).
        box_pe: add the position term p_f . p_k to the first dynamic conv (bb-PE in dynamic conv).
        centerness: None or a :class:`CenternessMask` (cb-PE), which weights both p_f and p_k per RoI
            element. The paper (Sec. 3.4) multiplies the mask onto the RoI feature f and kernel k; the
            official code multiplies it onto the PEs p_f and p_k instead. This follows the code.
    """

    def __init__(
        self,
        dim: int,
        dynamic_dim: int,
        pooler_resolution: int,
        box_pe: bool = False,
        centerness: CenternessMask | None = None,
    ):
        super().__init__()
        if centerness is not None and not box_pe:
            raise ConfigValueError(
                "centerness PE modulates the dynamic-conv box PE (official code): it needs box_pe=True"
            )
        self.dim = dim
        self.dynamic_dim = dynamic_dim
        self.num_params = dim * dynamic_dim
        # Eq. 2: one FC layer c -> 2 * c * d gives the kernels k (c x d) and v (d x c).
        self.dynamic_layer = Linear(dim, 2 * self.num_params)
        self.norm1 = nn.LayerNorm(dynamic_dim)
        self.norm2 = nn.LayerNorm(dim)
        # Eq. 3: Out, FC 7 x 7 x c -> c.
        self.out_layer = Linear(dim * pooler_resolution**2, dim)
        self.norm3 = nn.LayerNorm(dim)
        self.box_pe = box_pe
        if box_pe:
            self.center_scale = MLP(dim, dim, dim, 2)  # MLP_c of Eq. 4
            self.size_ref = MLP(dim, dim, 2, 2)  # MLP_s of Eq. 4: (w_ref, h_ref) through a sigmoid
            self.roi_pos_proj = Linear(dim, dim)  # projects p_f per RoI element
            self.kernel_pos_proj = Linear(dim, dim)  # projects p_k per RoI element
        self.centerness = centerness

    def position_kernel(self, proposal_features, box_sine, boxes):
        """p_k of Eq. 5 before the centerness weighting and projection.

        Args:
            proposal_features: (M, c).
            box_sine: (M, 2c) box sinusoid (y, x, w, h); its first c entries are Sinusoidal(y), (x).
            boxes: (M, 4) normalised (cx, cy, w, h).
        Returns:
            (M, c) = [Sinusoidal(y) * q_c,y * h_ref / h, Sinusoidal(x) * q_c,x * w_ref / w].
        """
        half = self.dim // 2
        pos = box_sine[:, : self.dim] * self.center_scale(proposal_features)
        ref = self.size_ref(proposal_features).sigmoid()
        y_scale = ref[:, 1:2] / boxes[:, 3:4]
        x_scale = ref[:, 0:1] / boxes[:, 2:3]
        return torch.cat((pos[:, :half] * y_scale, pos[:, half:] * x_scale), dim=1)

    def project_roi_position(self, roi_pos) -> torch.Tensor:
        """W p_f without the bias, (M, S, c), from the pooled image PE: a dense (M, S, c) tensor or a
        :class:`~recursivedet.modeling.roi_position_encoding.SeparableRoIPE`. It does not change between
        the passes of a stage, so the stage computes it once."""
        if isinstance(roi_pos, torch.Tensor):
            return linear(roi_pos, self.roi_pos_proj.weight)
        return roi_pos.project(self.roi_pos_proj.weight)

    def position_term(self, pos_f: torch.Tensor, pos_k: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """p_f . p_k for every RoI element, (M, S).

        Concatenating p_f to f and p_k to k (Sec. 3.3) adds p_f . p_k to every hidden channel. With the mask m
        weighting both PEs, proj(m_s * p) = m_s * (W p) + b, so the official per-element projections equal
        p_f = m_s W_f p_f + b_f and p_k = m_s W_k p_k + b_k, whose dot product expands into
        m_s^2 (W_f p_f . W_k p_k) + m_s (W_f p_f . b_k + b_f . W_k p_k) + b_f . b_k: one small batched
        product instead of several (M, S, c) element-wise tensors (same value up to float rounding).

        Args:
            pos_f: (M, S, c) W_f p_f (:meth:`project_roi_position`). pos_k: (M, c) W_k p_k.
            mask: None or the centerness weights m, (M or 1, S).
        """
        bias_f, bias_k = self.roi_pos_proj.bias, self.kernel_pos_proj.bias
        dots = torch.bmm(pos_f, torch.stack((pos_k, bias_k.expand_as(pos_k)), dim=2))  # (M, S, 2)
        f_k, f_bias = dots.unbind(-1)
        cross = f_bias + pos_k @ bias_f[:, None]  # 2-D products: fvcore counts them
        constant = (bias_f * bias_k).sum()
        if mask is None:
            return f_k + cross + constant
        return mask * mask * f_k + mask * cross + constant

    def forward(self, proposal_features, roi_features, roi_pos_projected=None, box_sine=None, boxes=None):
        """One dynamic-conv pass.

        Args:
            proposal_features: (M, c), M = batch x proposals.
            roi_features: (M, S, c) RoI features, S = R * R.
            roi_pos_projected: (M, S, c) :meth:`project_roi_position` of p_f (only with ``box_pe``).
            box_sine: (M, 2c) box sinusoid (only with ``box_pe``).
            boxes: (M, 4) normalised (cx, cy, w, h) boxes (only with ``box_pe``).
        Returns:
            (M, c) object feature (before the stage's residual and LayerNorm).
        """
        params = self.dynamic_layer(proposal_features)
        kernel1 = params[:, : self.num_params].view(-1, self.dim, self.dynamic_dim)
        kernel2 = params[:, self.num_params :].view(-1, self.dynamic_dim, self.dim)

        x = torch.bmm(roi_features, kernel1)  # (M, S, d)
        if self.box_pe:
            pos_k = linear(self.position_kernel(proposal_features, box_sine, boxes), self.kernel_pos_proj.weight)
            mask = self.centerness(proposal_features) if self.centerness is not None else None
            x = x + self.position_term(roi_pos_projected, pos_k, mask)[..., None]
        x = F.relu(self.norm1(x), inplace=True)  # in place: LayerNorm keeps its input for backward, not output
        x = F.relu(self.norm2(torch.bmm(x, kernel2)), inplace=True)  # (M, S, c)
        return F.relu(self.norm3(self.out_layer(x.flatten(1))), inplace=True)
