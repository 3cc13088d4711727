"""Training and evaluation driven by a LazyConfig (the LazyConfig counterpart of detectron2's
``DefaultTrainer``, as in detectron2's ``tools/lazyconfig_train_net.py``).

The config provides ``model``, ``optimizer`` (``params.model`` is filled in here), ``lr_multiplier`` (a
fvcore ``ParamScheduler``), ``dataloader.{train,test,evaluator}`` and ``train`` (see
``configs/common/train.py``).
"""

import logging

import torch
from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm

from .checkpoint import Checkpointer, load_weights
from .hooks import GradClipHook, IterationSeedHook
from .loader import TrainLoader

logger = logging.getLogger("detectron2")


def check_device(cfg) -> torch.device:
    """``train.device`` as a torch device; a clear error when it or AMP cannot be used here."""
    device = torch.device(cfg.train.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={cfg.train.device} but CUDA is not available; use train.device=cpu")
    if cfg.train.amp.enabled and device.type != "cuda":
        raise RuntimeError(f"train.amp.enabled=True needs a CUDA device (train.device={cfg.train.device})")
    return device


def build_model(cfg) -> torch.nn.Module:
    """``cfg.model`` on ``train.device``; on CPU, ``nn.SyncBatchNorm`` (GPU only) becomes detectron2's
    ``NaiveSyncBatchNorm``, which synchronises batch statistics over gloo."""
    model = instantiate(cfg.model)
    device = check_device(cfg)
    if device.type == "cpu":
        model = _cpu_sync_batchnorm(model)
    return model.to(device)


def _cpu_sync_batchnorm(module: torch.nn.Module) -> torch.nn.Module:
    if isinstance(module, torch.nn.SyncBatchNorm):
        bn = NaiveSyncBatchNorm(module.num_features, eps=module.eps, momentum=module.momentum, affine=module.affine)
        bn.load_state_dict(module.state_dict())
        bn.train(module.training)
        return bn
    for name, child in module.named_children():
        setattr(module, name, _cpu_sync_batchnorm(child))
    return module


def wrap_ddp(cfg, model):
    """DistributedDataParallel when there are several processes (detectron2's ``create_ddp_model``). On CPU
    (gloo) there is no device id to give: ``create_ddp_model`` would pass the local rank as one."""
    kwargs = dict(cfg.train.ddp)
    if torch.device(cfg.train.device).type == "cpu":
        kwargs["device_ids"] = None
    return create_ddp_model(model, **kwargs)


def do_test(cfg, model) -> dict:
    """Run ``dataloader.evaluator`` on ``dataloader.test`` (all processes; results on the main one)."""
    if "evaluator" not in cfg.dataloader:
        return {}
    results = inference_on_dataset(model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator))
    if comm.is_main_process():
        print_csv_format(results)
    return results


def evaluate(cfg) -> dict:
    """Evaluate the weights in ``train.init_checkpoint`` (``--eval-only``)."""
    if not cfg.train.init_checkpoint:
        raise ValueError("evaluation needs weights: set train.init_checkpoint=/path/to/model.pth")
    model = build_model(cfg)
    load_weights(model, cfg.train.init_checkpoint, strict=True)
    return do_test(cfg, model)


def do_train(cfg, resume: bool = False):
    """Train from ``train.init_checkpoint`` or, with ``resume``, from ``train.output_dir/last_checkpoint``
    (exactly: the data of each iteration and the RNG draws are those of an uninterrupted run, see
    :mod:`recursivedet.engine.loader`). Returns the trainer."""
    model = build_model(cfg)
    logger.info(f"Model:\n{model}")
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = wrap_ddp(cfg, model)
    trainer = (AMPTrainer if cfg.train.amp.enabled else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = Checkpointer(model, cfg.train.output_dir, trainer=trainer)
    resuming = resume and checkpointer.has_checkpoint()
    # Resuming reloads our own checkpoint: everything must match. Initial weights (e.g. an ImageNet
    # backbone) cover part of the model only.
    checkpointer.strict = resuming
    clip = cfg.train.clip_grad
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            IterationSeedHook(cfg.train.seed, comm.get_rank()) if cfg.train.seed >= 0 else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            GradClipHook(clip.max_norm, clip.norm_type) if clip.enabled else None,
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    # The checkpoint stores the iteration that just finished.
    start_iter = trainer.iter + 1 if resuming else 0
    if isinstance(train_loader, TrainLoader):
        train_loader.start_iter = start_iter
    elif start_iter > 0:
        logger.warning(f"{type(train_loader).__name__} cannot skip to iteration {start_iter}: the data order differs")
    trainer.train(start_iter, cfg.train.max_iter)
    return trainer
