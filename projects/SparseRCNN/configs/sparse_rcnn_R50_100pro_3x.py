"""Sparse R-CNN, R50-FPN, 100 proposals, 3x schedule on COCO (paper Tables 4 and 6, first row)."""

from recursivedet.model_zoo import get_config

from .models.sparse_rcnn import model

dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
