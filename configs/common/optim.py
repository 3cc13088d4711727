"""AdamW of the official recipe: lr 2.5e-5 for a total batch of 16 images, weight decay 1e-4 on every
parameter (norms and biases included, as the official code), backbone lr multiplier 1.0. Parameters with
identical hyper-parameters share one param group (``get_default_optimizer_params`` merges them).

For another total batch B, scale lr linearly: ``optimizer.lr = 2.5e-5 * B / 16`` (and the iteration
counts by 16 / B; see :mod:`recursivedet.engine.solver`).
"""

import torch
from detectron2.config import LazyCall as L
from detectron2.solver import get_default_optimizer_params

from recursivedet.engine.solver import BackboneLRFactor

optimizer = L(torch.optim.AdamW)(
    params=L(get_default_optimizer_params)(
        # params.model is set to the model by the trainer
        base_lr="${..lr}",
        lr_factor_func=L(BackboneLRFactor)(multiplier=1.0),
    ),
    lr=2.5e-5,
    betas=(0.9, 0.999),
    weight_decay=1e-4,
)
