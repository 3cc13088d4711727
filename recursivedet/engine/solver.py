"""Optimizer and learning-rate schedule pieces used by the configs (``configs/common/optim.py``,
``configs/common/schedule.py``).

Learning-rate scaling rule: the official recipe is AdamW lr 2.5e-5 at a total batch of 16 images. For a
total batch B we scale the learning rate linearly, ``lr = 2.5e-5 * B / 16`` (what Sparse R-CNN's configs
imply), and scale the iteration counts by ``16 / B`` so that the number of epochs stays the same. E.g. for
B = 8, the overrides::

    dataloader.train.total_batch_size=8 optimizer.lr=1.25e-5 train.max_iter=540000
    lr_multiplier.steps=[420000,500000] lr_multiplier.warmup_iters=2000
"""

from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import MultiStepParamScheduler


class BackboneLRFactor:
    """``lr_factor_func`` for :func:`detectron2.solver.get_default_optimizer_params`: parameters under
    ``backbone.`` get ``multiplier`` times the base lr. A class (not a lambda) so configs stay serialisable
    and ``optimizer.params.lr_factor_func.multiplier=0.1`` works as an override."""

    def __init__(self, multiplier: float = 1.0, prefix: str = "backbone."):
        self.multiplier = multiplier
        self.prefix = prefix

    def __call__(self, name: str) -> float:
        return self.multiplier if name.startswith(self.prefix) else 1.0


def warmup_multistep(
    max_iter: int, steps: list[int], warmup_iters: int = 1000, warmup_factor: float = 0.01, gamma: float = 0.1
):
    """Linear warmup over ``warmup_iters`` from ``warmup_factor``, then x``gamma`` at each of ``steps``
    (absolute iterations), as a multiplier of the optimizer's lr (for detectron2's ``LRScheduler`` hook)."""
    if max_iter <= 0:
        raise ValueError(f"max_iter must be positive, got {max_iter}")
    steps = [s for s in steps if s < max_iter]  # steps past the end never happen (e.g. short runs)
    if list(steps) != sorted(steps):
        raise ValueError(f"lr steps must increase, got {steps}")
    return WarmupParamScheduler(
        MultiStepParamScheduler(
            values=[gamma**i for i in range(len(steps) + 1)], milestones=list(steps), num_updates=max_iter
        ),
        warmup_factor=warmup_factor,
        warmup_length=min(warmup_iters / max_iter, 1.0),
        warmup_method="linear",
    )
