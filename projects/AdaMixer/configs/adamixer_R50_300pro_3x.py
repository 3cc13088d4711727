"""AdaMixer, R50, 300 queries, the official 3x recipe (paper Table 2: 135M parameters, 47.0 AP): AdamW 2.5e-5,
weight decay 1e-4, clipping 1.0, 36 epochs of COCO train2017 at 16 images per batch (117,266 images with
annotations: 7,330 iterations per epoch, 263,880 in all), lr x0.1 after epochs 24 and 33, linear warmup over
500 iterations from 0.001, flip and multi-scale 480-800 with the DETR crop (the official pipeline)."""

from recursivedet.model_zoo import get_config

from .models.adamixer import model

dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

dataloader.train.mapper.augmentations.random_crop = True
train.max_iter = 36 * 7330
lr_multiplier.steps = [24 * 7330, 33 * 7330]
lr_multiplier.warmup_iters = 500
lr_multiplier.warmup_factor = 0.001

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
