"""Sparse R-CNN, R50-FPN, 100 proposals, 3x schedule on COCO (paper Tables 4 and 6, first row)."""

from .models.sparse_rcnn import model
from .recursivedet_R50_100pro_3x import dataloader, lr_multiplier, optimizer, train  # the same COCO recipe

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
