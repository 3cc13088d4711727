"""Paper Table 4, row 1 (and Table 6, row 1): Sparse R-CNN, R50-FPN, 100 proposals, 6 stages."""

from ..sparse_rcnn_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401
