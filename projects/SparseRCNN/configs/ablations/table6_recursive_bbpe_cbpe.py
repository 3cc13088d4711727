"""Paper Table 6, row 6 (and Table 5, 'static'): the full RecursiveDet, Recursive + bb-PE + cb-PE."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
