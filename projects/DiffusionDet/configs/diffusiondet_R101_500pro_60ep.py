"""DiffusionDet, R101-FPN, 500 proposals, the official recipe (paper Table 2: 130M parameters, 46.6 AP)."""

from .diffusiondet_R50_500pro_60ep import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up.stages.depth = 101
train.init_checkpoint = "detectron2://ImageNetPretrained/torchvision/R-101.pkl"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
