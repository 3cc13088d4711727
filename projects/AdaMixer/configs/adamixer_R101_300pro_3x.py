"""AdaMixer, R101, 300 queries, the official 3x recipe (paper Table 2: 154M parameters, 48.0 AP)."""

from .adamixer_R50_300pro_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-101.pkl"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
