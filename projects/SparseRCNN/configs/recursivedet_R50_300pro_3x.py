"""RecursiveDet (Sparse R-CNN host), R50-FPN, 300 proposals, 3x schedule with the random crop (paper Table 2:
55M parameters, 46.5 AP)."""

from .recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train

model.num_proposals = 300
model.detections_per_image = 100
dataloader.train.mapper.augmentations.random_crop = True

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
