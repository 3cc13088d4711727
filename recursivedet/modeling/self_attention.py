"""Self-attention among the proposal features of one image, optionally position-aware (Fig. 2b)."""

import torch
from torch import nn
from torch.nn import functional as F

from .linear import Linear


class ProposalSelfAttention(nn.Module):
    """Multi-head self-attention over the N proposals of each image.

    With ``box_pe`` it is Conditional-DETR style as in the official code: separate projections of query
    content, query position, key content and key position, q = content + position, k = content +
    position; the value has no position term. Without it, the content projections alone are plain
    multi-head attention (Sparse R-CNN; its ``in_proj`` weights map onto the three content projections).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0, box_pe: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"model width {dim} is not divisible by the number of heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.q_content_proj = Linear(dim, dim)
        self.k_content_proj = Linear(dim, dim)
        self.v_proj = Linear(dim, dim)
        self.box_pe = box_pe
        if box_pe:
            self.q_pos_proj = Linear(dim, dim)
            self.k_pos_proj = Linear(dim, dim)
        self.out_proj = Linear(dim, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, c) proposal features; pos: (B, N, c) box PE p. Returns (B, N, c)."""
        q = self.q_content_proj(x)
        k = self.k_content_proj(x)
        if self.box_pe:
            q = q + self.q_pos_proj(pos)
            k = k + self.k_pos_proj(pos)
        v = self.v_proj(x)
        b, n, c = x.shape
        q, k, v = (t.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))
