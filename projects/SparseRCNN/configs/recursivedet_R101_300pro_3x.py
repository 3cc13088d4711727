"""RecursiveDet (Sparse R-CNN host), R101-FPN, 300 proposals, 3x schedule (paper Table 2: 74M, 47.1 AP)."""

from .recursivedet_R50_300pro_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-101.pkl"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
