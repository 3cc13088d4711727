"""Sparse R-CNN, R50-FPN, 300 proposals, 3x schedule with the random crop (paper Table 2: 106M, 45.0 AP)."""

from .sparse_rcnn_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train

model.num_proposals = 300
model.detections_per_image = 100
dataloader.train.mapper.augmentations.random_crop = True

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
