"""AdaMixer's adaptive mixing (AdaMixer Sec. 3.4, official ``AdaptiveMixing``): the host's dynamic interaction.

The query generates, with one Linear ("Dyn" of RecursiveDet Table 1: c -> G (C_g^2 + P_out P_in) = 32768 at
c = 256), per group a channel mixer M (C_g x C_g, C_g = c / G) and a spatial mixer S (P_out x P_in). The
sampled features x (P_in x C_g per group) become ReLU(LN(S ReLU(LN(x M)))) (LayerNorms over both axes, no
affine), which "Out" (Linear(G P_out C_g -> c), 8,388,864 parameters) maps back to the query width.

RecursiveDet's bb-PE in the dynamic conv (Eq. 4-5) adds a position term p_f . p_k per sampling point to the
channel-mixing output, broadcast over its channels, as the library's dynamic conv adds it to the output of
its first dynamic conv (:mod:`~.mixing_position`).
"""

import torch
from torch import nn
from torch.nn import functional as F

from recursivedet.modeling.linear import Linear, linear


class AdaptiveMixing(nn.Module):
    """One mixing pass: Dyn -> channel mixing -> spatial mixing -> Out (RecDy runs it again, Sec. 3.2).

    Args:
        dim: query width c = feature width. num_groups: G (4). in_points: P_in (32). out_points: P_out (128).
        chunk_queries: bounds the intermediates to what this many queries make at once (None: no bound); the
            result is the same. At the official sizes each query's generated mixers and spatial-mixing output
            take 128 KB each, so the 300 queries of an image make 39 MB tensors: above glibc's ``malloc`` mmap
            threshold (32 MB at most) every allocation maps fresh pages, and faulting them in slows the spatial
            product and its LayerNorm on the CPU. 128 keeps each under 17 MB, reused from the heap and more
            likely to stay in the last-level cache (``python -m recursivedet.analysis.benchmark --config-file
            AdaMixer/adamixer_R50_300pro_3x.py model.decoder.stage.mixing_chunk_queries=null`` times the other
            choice).

    With gradients, the queries are mixed in even chunks of at most ``chunk_queries`` (300 -> 3 x 100). Without
    them (inference), one group at a time for chunks of at most ``G * chunk_queries`` queries (the same bound):
    each group's rows of the dynamic layer and columns of the out layer are then read once for all the queries
    of an image instead of once per chunk, and Out sums the groups' products (less memory traffic per stage). The
    group-wise path is inference-only because autograd would
    materialize a full-size zero gradient for each weight slice.
    """

    def __init__(
        self, dim: int, num_groups: int = 4, in_points: int = 32, out_points: int = 128, chunk_queries: int | None = 128
    ):
        super().__init__()
        if chunk_queries is not None and chunk_queries < 1:
            raise ValueError(f"chunk_queries must be None or at least 1, got {chunk_queries}")
        self.chunk_queries = chunk_queries
        self.num_groups = num_groups
        self.in_points = in_points
        self.out_points = out_points
        self.group_dim = dim // num_groups
        self.channel_params = self.group_dim * self.group_dim
        self.spatial_params = out_points * in_points
        self.dynamic_layer = Linear(dim, num_groups * (self.channel_params + self.spatial_params))
        self.out_layer = Linear(num_groups * out_points * self.group_dim, dim)

    def forward(self, sampled: torch.Tensor, query: torch.Tensor, position: torch.Tensor | None = None):
        """Mix the sampled features with parameters generated from the query.

        Args:
            sampled: (B, N, G, P_in, C_g) sampled features.
            query: (B, N, c) queries.
            position: None or (B, N, G, P_in) position term p_f . p_k (bb-PE).
        Returns:
            (B, N, c) Out(mixed features), before the stage's residual and LayerNorm.
        """
        b, n, g, p, c = sampled.shape
        rows = (sampled.reshape(b * n, g, p, c), query.reshape(b * n, -1))
        if position is not None:
            rows += (position.reshape(b * n, g, p, 1),)
        params = (sampled, query, position, *self.parameters())
        needs_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in params)
        mix, chunk_size = (self._mix, self.chunk_queries) if needs_grad else (self._mix_by_group, self._group_chunk())
        num_chunks = -(-b * n // chunk_size) if chunk_size else 1
        chunks = zip(*(r.chunk(num_chunks) for r in rows), strict=True)  # even sizes: 300 -> 3 x 100
        return torch.cat([mix(*chunk) for chunk in chunks]).view(b, n, -1)

    def _group_chunk(self) -> int | None:
        return self.chunk_queries * self.num_groups if self.chunk_queries else None

    def _mix(self, sampled: torch.Tensor, query: torch.Tensor, position: torch.Tensor | None = None) -> torch.Tensor:
        """(M, G, P_in, C_g) features, (M, c) queries, None or (M, G, P_in, 1) position terms -> (M, c)."""
        m, g, p, c = sampled.shape
        params = self.dynamic_layer(query).view(m, g, -1)
        channel, spatial = params.split([self.channel_params, self.spatial_params], dim=-1)
        x = torch.matmul(sampled, channel.reshape(m, g, c, c))  # (M, G, P_in, C_g)
        if position is not None:
            x = x + position
        x = F.relu(F.layer_norm(x, x.shape[-2:]), inplace=True)
        x = torch.matmul(spatial.reshape(m, g, self.out_points, p), x)  # (M, G, P_out, C_g)
        x = F.relu(F.layer_norm(x, x.shape[-2:]), inplace=True)
        return self.out_layer(x.reshape(m, -1))

    def _mix_by_group(
        self, sampled: torch.Tensor, query: torch.Tensor, position: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:meth:`_mix` one group at a time: group k's parameters are rows k (C_g^2 + P_out P_in) onwards of the
        dynamic layer, its mixed features columns k P_out C_g onwards of the out layer's input."""
        m, g, p, c = sampled.shape
        group_params = self.channel_params + self.spatial_params
        group_width = self.out_points * c
        out = None
        for k in range(g):
            rows = slice(k * group_params, (k + 1) * group_params)
            params = linear(query, self.dynamic_layer.weight[rows], self.dynamic_layer.bias[rows])
            channel, spatial = params.split([self.channel_params, self.spatial_params], dim=-1)
            x = torch.matmul(sampled[:, k], channel.reshape(m, c, c))  # (M, P_in, C_g)
            if position is not None:
                x = x + position[:, k]
            x = F.relu(F.layer_norm(x, x.shape[-2:]), inplace=True)
            x = torch.matmul(spatial.reshape(m, self.out_points, p), x)  # (M, P_out, C_g)
            x = F.relu(F.layer_norm(x, x.shape[-2:]), inplace=True)
            # F.linear, not oneDNN: oneDNN is pathologically slow on a column slice of a weight (seconds per call).
            weight = self.out_layer.weight[:, k * group_width : (k + 1) * group_width]
            part = F.linear(x.reshape(m, -1), weight, self.out_layer.bias if k == 0 else None)
            out = part if out is None else out.add_(part)
        return out
