"""Sparse R-CNN, R50-FPN, 100 proposals, 3x schedule on COCO (paper Tables 4 and 6, first row)."""

from .common.data.coco import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.sparse_rcnn import model

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
