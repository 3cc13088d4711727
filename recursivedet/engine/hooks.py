"""Training hooks: full-model gradient clipping, per-iteration RNG seeding, a stop on non-finite losses or
gradients, and evaluation at the end of training only when it ended."""

import os
import random
import re
from collections.abc import Mapping

import numpy as np
import torch
from detectron2.engine import HookBase, hooks

from recursivedet.errors import NonFiniteError, UserError


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
        self.total_norm: torch.Tensor | None = None  # of the last step, before clipping

    def after_backward(self):
        optimizer = self.trainer.optimizer
        scaler = getattr(self.trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            scaler.unscale_(optimizer)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        # kept for NonFiniteCheck, which would otherwise compute it again
        self.total_norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm, norm_type=self.norm_type)


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


class NonFiniteLossError(NonFiniteError):
    """A loss, the gradient norm or the model's boxes became NaN or infinite during training."""


# RecursiveDet's loss names (RecursiveDet.losses): "loss_cls" of the last decoder stage, "loss_cls_{t}" of
# earlier stage t, "loss_cls_rego{k}" of REGO stage k and "loss_cls_rego{k}_{l}" of its earlier layer l.
_LOSS_NAME = re.compile(r"(loss_[a-z0-9]+)(?:_rego(\d+)(?:_(\d+))?|_(\d+))?")


def _loss_place(name: str, model) -> tuple[tuple, str]:
    """For a loss of ``model``: a sort key (earlier stages first, where a NaN usually starts) and where the
    loss is computed, e.g. "decoder stage 3 of 6" ("" if the name or model does not tell)."""
    match = _LOSS_NAME.fullmatch(name)
    num_stages = getattr(getattr(model, "decoder", None), "num_stages", None)
    if match is None or not isinstance(num_stages, int):
        return (2,), ""
    _, rego_stage, rego_layer, stage = match.groups()
    if rego_stage is None:
        t = num_stages - 1 if stage is None else int(stage)
        return (0, t), f"decoder stage {t + 1} of {num_stages}"
    k = int(rego_stage)
    where = f"REGO stage {k + 1} of {getattr(getattr(model, 'rego', None), 'num_stages', '?')}"
    if rego_layer is None:
        return (1, k, float("inf")), where
    return (1, k, int(rego_layer)), f"{where}, layer {int(rego_layer) + 1}"


class NonFiniteCheck(HookBase):
    """Stop training with a :class:`NonFiniteLossError` as soon as a loss is NaN or infinite (checked on the
    model's loss dict, before backward) or, without AMP, the gradient norm is (after backward, before the
    optimizer step; with AMP the grad scaler skips such steps itself). The message names the loss (and the
    stage its name shows), the iteration, the learning rate and the last checkpoint of the run, which stays
    the last one: the failed step updates no weight and no checkpoint is written after it.

    Args:
        checkpointer: the run's checkpointer (to name its last checkpoint), or None.
        resumed: the run resumed from the last checkpoint in the checkpointer's folder (a checkpoint of this
            run's history even before this process writes one).
        clip_hook: the run's :class:`GradClipHook`, whose gradient norm is then reused; without it the norm is
            computed here.
    """

    def __init__(self, checkpointer=None, resumed: bool = False, clip_hook: GradClipHook | None = None):
        self.checkpointer = checkpointer
        self.resumed = resumed
        self.clip_hook = clip_hook
        self._handle = None
        self._checkpoint_at_start = None

    def before_train(self):
        self._checkpoint_at_start = self._last_checkpoint()
        self._handle = self.trainer.model.register_forward_hook(self._check_losses)

    def after_train(self):
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    def _check_losses(self, module, inputs, losses):
        if not module.training or not isinstance(losses, Mapping) or not losses:
            return
        values = torch.stack([torch.as_tensor(v).detach().float().reshape(()) for v in losses.values()])
        finite = torch.isfinite(values)
        if bool(finite.all()):  # one device synchronisation per iteration
            return
        model = getattr(module, "module", module)  # DistributedDataParallel
        bad = sorted(
            (_loss_place(name, model), name, value)
            for name, value, ok in zip(losses, values.tolist(), finite.tolist(), strict=True)
            if not ok
        )
        (_, where), name, value = bad[0]
        what = f"loss {name}" + (f" ({where})" if where else "")
        others = f", as are {len(bad) - 1} other losses" if len(bad) > 1 else ""
        raise NonFiniteLossError(f"{what} is {value} at {self._when()}{others}; {self._kept()}")

    def after_backward(self):
        scaler = getattr(self.trainer, "grad_scaler", None)
        if scaler is not None and scaler.is_enabled():
            return
        norm = self.clip_hook.total_norm if self.clip_hook is not None else None
        if norm is None:
            grads = [p.grad for g in self.trainer.optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = (
                torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])) if grads else None
            )
        if norm is not None and not bool(torch.isfinite(norm)):
            raise NonFiniteLossError(
                f"the gradient norm is {float(norm)} at {self._when()} while every loss is finite; {self._kept()}"
            )

    def stopped(self, error: NonFiniteError) -> NonFiniteLossError:
        """The training error for non-finite values that the model itself found (e.g. NaN boxes before RoIAlign,
        in the forward pass, before any loss): its message with the iteration, lr and last checkpoint."""
        return NonFiniteLossError(f"{error} at {self._when()}; {self._kept()}")

    def _when(self) -> str:
        optimizer = self.trainer.optimizer
        # the lr detectron2 logs: that of the group with the most parameters
        lr = optimizer.param_groups[hooks.LRScheduler.get_best_param_group_id(optimizer)]["lr"]
        return f"iteration {self.trainer.iter} (lr {lr:.4g})"

    def _last_checkpoint(self) -> str | None:
        if self.checkpointer is None or not self.checkpointer.save_dir:
            return None
        try:
            path = self.checkpointer.get_checkpoint_file() if self.checkpointer.has_checkpoint() else ""
        except (OSError, UserError):  # an unreadable last_checkpoint names no checkpoint
            return None
        return path if path and os.path.isfile(path) else None

    def _kept(self) -> str:
        path = self._last_checkpoint()
        # a last_checkpoint that predates this run and was not resumed from belongs to another run
        if path is None or (path == self._checkpoint_at_start and not self.resumed):
            return "no checkpoint was written before it"
        return f"the last good checkpoint {path} is kept"


class EvalHook(hooks.EvalHook):
    """detectron2's ``EvalHook`` without the evaluation after training when training stopped with an error in
    its last iteration (detectron2 evaluates whenever the last iteration started)."""

    def after_train(self):
        # TrainerBase.train leaves iter at max_iter only after the last iteration ended
        if self.trainer.iter < self.trainer.max_iter:
            self._eval_after_train = False
        super().after_train()
