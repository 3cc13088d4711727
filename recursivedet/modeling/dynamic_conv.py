"""The dynamic interaction of Sparse R-CNN with RecursiveDet's position-aware variant (Fig. 2c).

One call is one dynamic-conv pass; RecDy (Sec. 3.2) calls the same module twice per stage.

The box PE of the dynamic conv comes in two forms (``pe_form``):

- ``"official"``: the official code's term p_f . p_k, one number per RoI element added to all d hidden
  channels of the first dynamic conv. ``norm1``, a LayerNorm over those d channels, subtracts the
  per-element mean and so removes the term exactly (1e-15 in float64): the box PE of the dynamic conv and
  every centerness form, which only scales the term, change nothing. Kept to load and compare with the
  official code.
- ``"per_channel"`` (default): the Hadamard product p_f * p_k projected to the d channels by W (d x c),
  zero-initialised: each hidden channel gets its own combination of the c PE channels, which the LayerNorm
  keeps. It is Sec. 3.3's concatenation with p_k extended to a c x d kernel, as concatenating it to the
  c x d kernel k implies: [f, p_f] [k; diag(p_k) W^T] = f k + (p_f * p_k) W^T. The official term is the
  all-ones W, which the LayerNorm removes whatever else W holds; it is left out rather than added, since a
  large term that a LayerNorm then subtracts only costs float32 precision. W = 0 is the official form's
  function, so official weights load into this form unchanged, and training moves W from there.
"""

import torch
from torch import nn
from torch.nn import functional as F

from recursivedet.errors import ConfigValueError

from .linear import Linear, linear
from .mlp import MLP
from .position_encoding import CenternessMask

PE_FORMS = ("per_channel", "official")


class DynamicConv(nn.Module):
    """Dyn (Eq. 2) -> two 1x1 dynamic convs -> Out (Eq. 3), optionally with the box PE of Eq. 4-5.

    Args:
        dim: model width c.
        dynamic_dim: hidden width d of the bottleneck (official 64).
        pooler_resolution: RoI size R (official 7).
        box_pe: add the position term p_f . p_k to the first dynamic conv (bb-PE in dynamic conv).
        centerness: None or a :class:`CenternessMask` (cb-PE), which weights both p_f and p_k per RoI
            element. The paper (Sec. 3.4) multiplies the mask onto the RoI feature f and kernel k; the
            official code multiplies it onto the PEs p_f and p_k instead. This follows the code. (On f and k
            the mask scales each element's whole first-conv output, which ``norm1`` removes as well.)
        pe_form: ``"per_channel"`` or ``"official"`` (module docstring); only the per-channel form acts.
    """

    def __init__(
        self,
        dim: int,
        dynamic_dim: int,
        pooler_resolution: int,
        box_pe: bool = False,
        centerness: CenternessMask | None = None,
        pe_form: str = "per_channel",
    ):
        super().__init__()
        if pe_form not in PE_FORMS:
            raise ConfigValueError(f"the dynamic-conv PE form must be one of {PE_FORMS}, got {pe_form!r}")
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
        self.per_channel = box_pe and pe_form == "per_channel"
        if self.per_channel:
            # W of the per-channel term, zeros: made without drawing random numbers, so that every other
            # module initialises as in the official form (same seed, same weights, same function at the start).
            self.position_channels = nn.Parameter(torch.zeros(dynamic_dim, dim))
        self.centerness = centerness

    def reset_parameters(self):
        """W of the per-channel term to zero: the official form's function at the start (module docstring)."""
        if self.per_channel:
            nn.init.zeros_(self.position_channels)

    def zero_initialised_parameters(self) -> list[nn.Parameter]:
        """Parameters that :meth:`reset_parameters` sets and a model-wide random init must leave alone."""
        return [self.position_channels] if self.per_channel else []

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Weights of one form load into the other where they are the same function: official-form weights
        (official checkpoints, converted, and this project's from before the per-channel form) into the
        per-channel form with W = 0, and per-channel weights whose W is still zero into the official form. A
        non-zero W stays an unexpected key, which strict loading refuses."""
        key = prefix + "position_channels"
        if self.per_channel and key not in state_dict and prefix + "kernel_pos_proj.weight" in state_dict:
            state_dict[key] = torch.zeros_like(self.position_channels)
        elif not self.per_channel and key in state_dict and not state_dict[key].any():
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

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
        """The official form's p_f . p_k for every RoI element, (M, S).

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

    def per_channel_position_term(
        self, pos_f: torch.Tensor, pos_k: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """The per-channel form, (M, S, d): (p_f,s * p_k,s) W^T for every RoI element s.

        p_f,s = m_s W_f p_f + b_f and p_k,s = m_s W_k p_k + b_k as in the official code (the centerness m weights
        both PEs before their projections). Summed over the c channels (W = all ones) this would be the official
        p_f . p_k; W (d x c) weights the c products differently for each hidden channel, so the term is not
        constant over the d channels that ``norm1`` normalises and survives it, and so does the mask, which
        weights the term of each element differently.

        Args:
            pos_f: (M, S, c) W_f p_f. pos_k: (M, c) W_k p_k. mask: None or the centerness weights m, (M or 1, S).
        """
        bias_f, bias_k = self.roi_pos_proj.bias, self.kernel_pos_proj.bias
        pos_k = pos_k[:, None, :]
        if mask is not None:
            pos_f, pos_k = mask[..., None] * pos_f, mask[..., None] * pos_k
        products = (pos_f + bias_f) * (pos_k + bias_k)  # (M, S, c)
        return linear(products, self.position_channels)

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
            if self.per_channel:
                x = x + self.per_channel_position_term(roi_pos_projected, pos_k, mask)
            else:
                x = x + self.position_term(roi_pos_projected, pos_k, mask)[..., None]
        x = F.relu(self.norm1(x), inplace=True)  # in place: LayerNorm keeps its input for backward, not output
        x = F.relu(self.norm2(torch.bmm(x, kernel2)), inplace=True)  # (M, S, c)
        return F.relu(self.norm3(self.out_layer(x.flatten(1))), inplace=True)
