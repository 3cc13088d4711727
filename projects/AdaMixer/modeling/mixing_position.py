"""RecursiveDet's bounding-box PE of the dynamic interaction (Sec. 3.3, Eq. 4-5, Fig. 2c) on AdaMixer.

p_k is the library's (:class:`recursivedet.modeling.dynamic_conv.DynamicConv`): q_c = MLP_c(q) scales the box
centre's sinusoid, (w_ref, h_ref) = sigmoid(MLP_s(q)) scales its x half by w_ref / w and its y half by
h_ref / h, then a Linear projects it. Boxes are normalised by the image size, as on the other hosts.

p_f: AdaMixer samples points, not a 7x7 grid, and its points leave the box. Each sampling point's p_f is the
image sine PE *at that point*: the same 2-D sinusoid (2 pi scale, temperature 10000) of its position
normalised by the image size, evaluated in closed form at the point's continuous (x, y) (the z coordinate has
no image PE), then a Linear projects it. On a 7x7 RoI grid this is the PE the other hosts pool.

The position term p_f . p_k of each point is added to the channel-mixing output, broadcast over the group's
channels (the library adds it to the first dynamic conv's output in the same way). As there, the two
projections are expanded so that no per-point projection is computed:
(W_f s_f + b_f) . k = s_f . (W_f^T k) + b_f . k with k = W_k s_k + b_k.

No centerness (cb-PE): the sampling points leave the box (paper Sec. 4.2), so the paper leaves it out.
"""

import torch
from torch import nn

from recursivedet.modeling.linear import Linear
from recursivedet.modeling.mlp import MLP
from recursivedet.modeling.position_encoding import box_sine_embedding

from .position_encoding import point_sine_embedding


class MixingPositionEncoding(nn.Module):
    """p_k from the query and its box, and the term p_f . p_k at each sampling point.

    Args:
        dim: query width c (p_k and p_f have c entries: c / 2 frequencies for y and for x).
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim % 2:
            raise ValueError(f"model width must be even (half encodes y, half x), got {dim}")
        self.dim = dim
        self.center_scale = MLP(dim, dim, dim, 2)  # MLP_c of Eq. 4
        self.size_ref = MLP(dim, dim, 2, 2)  # MLP_s of Eq. 4: (w_ref, h_ref) through a sigmoid
        self.roi_pos_proj = Linear(dim, dim)  # projects p_f
        self.kernel_pos_proj = Linear(dim, dim)  # projects p_k

    def position_kernel(self, query: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """p_k of Eq. 5 before its projection, (B, N, c):
        [Sinusoidal(y) q_c,y h_ref / h, Sinusoidal(x) q_c,x w_ref / w].

        Args:
            query: (B, N, c). boxes: (B, N, 4) normalised (cx, cy, w, h).
        """
        half = self.dim // 2
        pos = box_sine_embedding(boxes, half)[..., : self.dim] * self.center_scale(query)
        ref = self.size_ref(query).sigmoid()
        y_scale = ref[..., 1:2] / boxes[..., 3:4]
        x_scale = ref[..., 0:1] / boxes[..., 2:3]
        return torch.cat((pos[..., :half] * y_scale, pos[..., half:] * x_scale), dim=-1)

    def forward(self, query, boxes, points, image_wh) -> torch.Tensor:
        """The position term p_f . p_k of every sampling point.

        Args:
            query: (B, N, c) the query that generates this pass's mixing parameters.
            boxes: (B, N, 4) normalised (cx, cy, w, h) boxes.
            points: (B, N, G, P, 3) sampling points (x, y in pixels).
            image_wh: (B, 2) image width and height in pixels.
        Returns:
            (B, N, G, P) term added to the channel-mixing output.
        """
        kernel = self.kernel_pos_proj(self.position_kernel(query, boxes))  # (B, N, c) = W_k s_k + b_k
        through_f = kernel @ self.roi_pos_proj.weight  # (B, N, c) = W_f^T k
        constant = (kernel @ self.roi_pos_proj.bias[:, None])[..., 0]  # (B, N) = b_f . k (2-D: fvcore counts it)
        # The points carry the gradient of their offsets, as the features sampled at them do.
        normalised = points[..., :2] / image_wh[:, None, None, None, :]
        sine = point_sine_embedding(normalised, self.dim // 2).to(query.dtype)  # (B, N, G, P, c)
        return torch.einsum("bngpc,bnc->bngp", sine, through_f) + constant[..., None, None]
