"""The tiny config (tiny_coco.py) with a model whose losses become NaN or infinite on request
(``model_factory.NonFiniteRecursiveDet``): overrides such as ``model.at=4 model.keys=[loss_bbox_1]
model.value=inf model.rank=1 model.gradient_only=True`` choose when, which and how. As set here, nothing
changes."""

import math

from model_factory import NonFiniteRecursiveDet

from .tiny_coco import dataloader, lr_multiplier, model, optimizer, train

model._target_ = NonFiniteRecursiveDet
model.at = -1  # the training iteration (never)
model.keys = []  # the losses
model.value = math.nan  # they are multiplied by
model.rank = None  # on this process only (None: on every process)
model.gradient_only = False  # True: the losses keep their value and get a NaN gradient instead

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
