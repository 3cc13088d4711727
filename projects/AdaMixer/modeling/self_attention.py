"""AdaMixer's position-aware self-attention among the queries of an image (AdaMixer Sec. 3.2, official
``AdaMixerDecoderStage.forward``).

The query's positional embedding e (a sinusoid of (x, y, z, r)) is added to the content q, and q + e is the
query, key, value and residual of an 8-head attention whose logits carry the bias tau_h log(IoF + 1e-7):
IoF(i, j) = |b_i n b_j| / |b_i|, one learnable tau per head, initialised U(0, 4). Output: LayerNorm(q + e +
MHA(q + e)).

RecursiveDet's bb-PE in self-attention (Sec. 3.3, Fig. 2b: the box sinusoid -> an MLP -> p) is
``box_pe=True``: e becomes MLP(sinusoid), used where AdaMixer uses the sinusoid (the host already adds a box PE
to its attention; the switch makes that PE learnable as the paper's p).
"""

import torch
from torch import nn

from recursivedet.modeling.mlp import MLP

from .boxes import xyzr_to_xyxy
from .position_encoding import xyzr_sine_embedding


def iof_log_bias(xyzr: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """log(IoF + 1e-7) of every pair of one image's boxes, (B, N, N), row i = query box (official: mmdet
    ``bbox_overlaps(mode='iof')``, area clamped at ``eps``)."""
    boxes = xyzr_to_xyxy(xyzr)
    lt = torch.maximum(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.minimum(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    overlap = (rb - lt).clamp(min=0).prod(-1)
    area = (boxes[..., 2:] - boxes[..., :2]).prod(-1).clamp(min=eps)
    return (overlap / area[:, :, None] + 1e-7).log()


class IoFSelfAttention(nn.Module):
    """Multi-head self-attention with the query-position embedding and the IoF bias.

    Args:
        dim: content width c (256). num_heads: heads (8). dropout: attention dropout.
        box_pe: RecursiveDet's bb-PE: the sinusoid goes through an MLP (c -> c -> c) first.
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, box_pe: bool = False):
        super().__init__()
        if dim % 4 or dim % num_heads:
            raise ValueError(f"model width {dim} must divide by 4 (x, y, z, r) and by the {num_heads} heads")
        self.num_heads = num_heads
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.iof_tau = nn.Parameter(torch.empty(num_heads))
        self.norm = nn.LayerNorm(dim)
        self.box_pe = box_pe
        if box_pe:
            self.box_pos_mlp = MLP(dim, dim, dim, 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, content: torch.Tensor, xyzr: torch.Tensor) -> torch.Tensor:
        """(B, N, c) query contents, (B, N, 4) positions -> (B, N, c) attended contents."""
        b, n, c = content.shape
        with torch.no_grad():
            iof = iof_log_bias(xyzr)
            pos = xyzr_sine_embedding(xyzr, c // 4).to(content.dtype)
        if self.box_pe:
            pos = self.box_pos_mlp(pos)
        bias = (iof[:, None] * self.iof_tau.view(1, -1, 1, 1)).flatten(0, 1).to(content.dtype)  # (B * heads, N, N)
        x = content + pos
        out = self.attn(x, x, x, attn_mask=bias, need_weights=False)[0]
        return self.norm(x + self.dropout(out))
