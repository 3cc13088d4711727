"""DiffusionDet, R50-FPN, 500 proposals, the official recipe (paper Table 2: 111M parameters, 45.8 AP): 450k
iterations of 16 images (60 epochs), lr x0.1 at 350k and 420k, AdamW 2.5e-5, multi-scale 480-800 with the
DETR crop, 1 DDIM step."""

from recursivedet.model_zoo import get_config

from .models.diffusiondet import model

dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

dataloader.train.mapper.augmentations.random_crop = True
train.max_iter = 450000
lr_multiplier.steps = [350000, 420000]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
