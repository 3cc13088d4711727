"""Starting a training run from a model trained on other data: another class count, another batch size.

- Weights of another shape (the class layers of every stage, and of REGO, when the class count differs; the
  proposals when their number differs) are not loaded: they keep the initialisation the model was just built
  with, i.e. they are re-initialised as the model initialises them (xavier weights, focal-loss prior bias 0.01,
  paper Sec. 3.1 / the official code). :class:`~recursivedet.engine.checkpoint.Checkpointer` lists them in one
  log line (:func:`skipped_tensors_message`).
- An ImageNet checkpoint of a timm backbone (e.g. Microsoft's ``swin_tiny_patch4_window7_224.pth``) given as
  ``train.init_checkpoint`` loads into the backbone (``timm_backbone.backbone_checkpoint``).
- ``train.reference_batch_size``: when set, ``optimizer.lr`` is the learning rate at that total batch size and is
  scaled linearly to ``dataloader.train.total_batch_size`` (the linear rule of Goyal et al., which detectron2's
  ``DefaultTrainer.auto_scale_workers`` applies with ``SOLVER.REFERENCE_WORLD_SIZE``), see
  :func:`scale_lr_to_batch_size`.
"""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from recursivedet.errors import ConfigValueError

__all__ = ["CLASS_LAYER_NAMES", "scale_lr_to_batch_size", "skipped_tensors_message"]

logger = logging.getLogger("detectron2")

# Module names of the class layers (decoder stages, REGO stages): re-initialised when the class count differs.
CLASS_LAYER_NAMES = ("class_logits",)


def _is_class_layer(key: str) -> bool:
    parts = key.split(".")
    return len(parts) >= 2 and parts[-2] in CLASS_LAYER_NAMES


def skipped_tensors_message(path: str, incorrect_shapes: list[tuple[str, tuple, tuple]]) -> str:
    """One line naming the tensors of checkpoint ``path`` that were not loaded because their shape differs
    (``(key, shape in the checkpoint, shape in the model)``), class layers first."""
    ordered = sorted(incorrect_shapes, key=lambda x: (not _is_class_layer(x[0]), x[0]))
    num_class = sum(_is_class_layer(k) for k, _, _ in incorrect_shapes)
    others = len(incorrect_shapes) - num_class
    counts = [f"{num_class} class-layer tensors, for the new class count"] if num_class else []
    counts += [f"{others} other tensors (e.g. the proposals, for their new number)"] if others else []
    listed = ", ".join(f"{k} {list(a)}->{list(b)}" for k, a, b in ordered)
    return (
        f"Not loaded from {path}, another shape in the model, keeping the model's initialisation "
        f"({'; '.join(counts)}): " + listed
    )


def scale_lr_to_batch_size(cfg) -> float:
    """Set ``optimizer.lr`` to ``optimizer.lr * dataloader.train.total_batch_size / train.reference_batch_size``
    when ``train.reference_batch_size`` is set (not None); returns the learning rate. Called once, before the
    optimizer is built; the reference is then cleared so that a second call changes nothing."""
    reference = OmegaConf.select(cfg, "train.reference_batch_size", default=None)
    lr = cfg.optimizer.lr
    if reference is None:
        return lr
    batch = cfg.dataloader.train.total_batch_size
    if not isinstance(reference, int) or isinstance(reference, bool) or reference <= 0:
        raise ConfigValueError(f"train.reference_batch_size must be a positive integer or null, got {reference!r}")
    scaled = lr * batch / reference
    logger.info(
        f"Learning rate {scaled:g} = optimizer.lr {lr:g} x total batch {batch} / train.reference_batch_size {reference}"
    )
    cfg.optimizer.lr = scaled
    cfg.train.reference_batch_size = None
    return scaled
