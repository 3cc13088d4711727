"""RecursiveDet (DiffusionDet), R50-FPN, 500 proposals, DiffusionDet's recipe (paper Table 2: 57M parameters,
47.1 AP)."""

from recursivedet.model_zoo import get_config

from .models.recursivedet_diffusiondet import model

dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

dataloader.train.mapper.augmentations.random_crop = True
train.max_iter = 450000
lr_multiplier.steps = [350000, 420000]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
