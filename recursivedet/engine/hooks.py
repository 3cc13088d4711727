"""Training hooks: full-model gradient clipping and per-iteration RNG seeding."""

import random

import numpy as np
import torch
from detectron2.engine import HookBase


def derived_seed(*keys: int) -> int:
    """A 32-bit seed that depends only on ``keys`` (well mixed, unlike ``sum`` or ``hash``)."""
    return int(np.random.SeedSequence([int(k) % 2**63 for k in keys]).generate_state(1)[0])


class GradClipHook(HookBase):
    """Clip the norm of all optimised gradients together ("full model", as the official Sparse R-CNN and
    RecursiveDet code), between backward and the optimizer step. With AMP the gradients are first unscaled
    (``GradScaler.unscale_``; the scaler's step then does not unscale again), so the threshold applies
    to the true gradients; a step with inf/nan gradients is still skipped by the scaler."""

    def __init__(self, max_norm: float = 1.0, norm_type: float = 2.0):
        self.max_norm = max_norm
        self.norm_type = norm_type

    def after_backward(self):
        optimizer = self.trainer.optimizer
        scaler = getattr(self.trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)


class IterationSeedHook(HookBase):
    """Seed python, numpy and torch before every iteration from (seed, iteration, rank), so the random
    draws of iteration i (e.g. dropout) are the same whether training ran straight through or was resumed,
    and whatever ran in between (evaluation, checkpointing)."""

    def __init__(self, seed: int, rank: int):
        self.seed = seed
        self.rank = rank

    def before_step(self):
        s = derived_seed(self.seed, self.trainer.iter, self.rank)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)
