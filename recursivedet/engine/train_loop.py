"""Training and evaluation driven by a LazyConfig (the LazyConfig counterpart of detectron2's
``DefaultTrainer``, as in detectron2's ``tools/lazyconfig_train_net.py``).

The config provides ``model``, ``optimizer`` (``params.model`` is filled in here), ``lr_multiplier`` (a
fvcore ``ParamScheduler``), ``dataloader.{train,test,evaluator}`` and ``train`` (see
``configs/common/train.py``).
"""

import functools
import inspect
import json
import logging
import os
from contextlib import contextmanager

import torch
from detectron2.config import instantiate
from detectron2.engine import AMPTrainer, SimpleTrainer, default_writers, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.layers import NaiveSyncBatchNorm
from detectron2.utils import comm
from omegaconf import OmegaConf
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from recursivedet.errors import TRACEBACK_ENV, ConfigValueError, NonFiniteError, UserError
from recursivedet.inference.speed import cpu_supports_bf16, inference_model

from .checkpoint import Checkpointer, CheckpointError, load_weights
from .cli import peer_reported_error
from .finetune import scale_lr_to_batch_size
from .hooks import EvalHook, GradClipHook, IterationSeedHook, NonFiniteCheck, NonFiniteLossError
from .loader import TrainLoader, dataset_categories, require_registered

logger = logging.getLogger("detectron2")


class DeviceError(UserError, RuntimeError):
    """``train.device`` (or AMP on it) cannot be used on this machine."""


def check_device(cfg, processes_per_machine: int = 1) -> torch.device:
    """``train.device`` as a torch device; :class:`DeviceError` when it, AMP or ``processes_per_machine``
    GPUs cannot be used here."""
    try:
        device = torch.device(cfg.train.device)
    except RuntimeError:
        raise ConfigValueError(f"train.device={cfg.train.device!r} is not a device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"train.device={cfg.train.device} but CUDA is not available; use train.device=cpu")
    if device.type == "cuda" and processes_per_machine > torch.cuda.device_count():
        raise DeviceError(
            f"--num-gpus {processes_per_machine} processes need as many CUDA devices, this machine has "
            f"{torch.cuda.device_count()}"
        )
    if cfg.train.amp.enabled and device.type == "cpu" and not cpu_supports_bf16():
        raise DeviceError(
            "train.amp.enabled=True on the CPU trains in bfloat16, which needs a processor with bfloat16 instructions "
            "(AVX-512 BF16 or AMX); this one has none (it would only emulate them, slower than float32): leave it off"
        )
    if cfg.train.amp.enabled and device.type not in ("cuda", "cpu"):
        raise DeviceError(f"train.amp.enabled=True needs a CUDA device or the CPU (train.device={cfg.train.device})")
    return device


def autocast_in_training(model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> nn.Module:
    """``model`` whose forward passes in training mode run under ``torch.autocast(cpu, dtype)`` (``train.amp`` on
    the CPU): the forward with its losses, as detectron2's ``AMPTrainer`` does on CUDA, while the backward pass and
    the optimizer step stay outside. No gradient scaler: bfloat16 has float32's exponent range. Evaluation during
    training stays in float32 (``train.inference.bf16`` is its own switch). The parameters, their names and the
    checkpoints are the model's own."""
    forward = model.forward

    @functools.wraps(forward)
    def forward_in_bfloat16_when_training(*args, **kwargs):
        with torch.autocast("cpu", dtype=dtype, enabled=model.training):
            return forward(*args, **kwargs)

    model.forward = forward_in_bfloat16_when_training
    return model


def _names(value) -> list[str]:
    """Dataset names of a config value (one name or a list)."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _model_class_counts(cfg) -> list[tuple[str, int]]:
    """(config key, number of classes) of every classifier of the model: the decoder's and, when REGO is on
    (``model.rego.num_stages`` > 0), REGO's, which follows the decoder's unless set on its own (see
    ``SparseRCNN/models/sparse_rcnn.py``)."""
    keys = ["model.decoder.stage.num_classes"]
    rego_stages = OmegaConf.select(cfg, "model.rego.num_stages", default=None)
    if isinstance(rego_stages, int) and rego_stages > 0:
        keys.append("model.rego.num_classes")
    counts = []
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, int) and not isinstance(value, bool):
            counts.append((key, value))
    return counts


def check_num_classes(cfg, names: list[str]) -> None:
    """:class:`ConfigValueError` when the model's number of classes differs from the number of categories of
    one of the datasets ``names`` (registered ones; datasets that define no categories are not checked).

    Both directions are errors. Fewer model classes than categories fail in the matcher at the first
    iteration. More are no better: the extra classes are never positives, yet at the start of training they
    score as high as the others, so detections of them reach the evaluator, which maps class indices back to
    the dataset's category ids and fails on them (after the whole schedule when ``train.eval_period`` is 0);
    export has the same problem. A model trained for more classes is evaluated on a subset by training it
    with the subset's class count."""
    counts = _model_class_counts(cfg)
    if not counts:
        return
    for name in names:
        categories = dataset_categories(name)
        if categories is None:
            continue
        for key, count in counts:
            if count != len(categories):
                raise ConfigValueError(
                    f"the model has {count} classes ({key}) but dataset {name!r} has {len(categories)} "
                    f"categories; set {key}={len(categories)}"
                )


# Minimum of config values that the model's constructors check only after building other parts, or with a
# message that does not name the key: checked from the config before anything is built.
_MINIMUM = {
    "model.num_proposals": 1,
    "model.detections_per_image": 1,
    "model.decoder.num_stages": 1,
    "model.rego.num_stages": 0,  # 0: no REGO
}


def _check_model_sizes(cfg) -> None:
    for key, minimum in _MINIMUM.items():
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, int) and not isinstance(value, bool) and value < minimum:
            raise ConfigValueError(f"{key} must be at least {minimum}, got {value}")


def _check_checkpoint_file(path: str, key: str) -> None:
    """:class:`CheckpointError` when the local file ``path`` (the value of ``key``) is missing or a folder.
    URLs (``detectron2://``, ``https://``) are fetched, and files read, when the model loads them."""
    if not path or "://" in path or "?" in path or os.path.isfile(path):
        return
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path} ({key}) is a directory, not a checkpoint file")
    raise CheckpointError(f"checkpoint file {path} ({key}) does not exist")


def check_config(cfg, *, eval_only: bool = False, resume: bool = False, world_size=None, processes_per_machine=None):
    """The checks of a training (or, with ``eval_only``, evaluation) run that need neither the model nor the
    data loaders, so that a wrong setting stops the run before anything is built or any process started: the
    device, model sizes, the checkpoint to start from (it exists), the datasets (registered; their number of
    categories is the model's, see :func:`check_num_classes`) and the batch size (a multiple of
    ``world_size``). ``world_size`` and ``processes_per_machine`` default to this process group's."""
    world_size = comm.get_world_size() if world_size is None else world_size
    processes_per_machine = comm.get_local_size() if processes_per_machine is None else processes_per_machine
    check_device(cfg, processes_per_machine)
    _check_model_sizes(cfg)
    output_dir = OmegaConf.select(cfg, "train.output_dir", default=None)
    if not eval_only and (not isinstance(output_dir, str) or not output_dir.strip()):
        raise ConfigValueError(f"train.output_dir must name a folder for the run's checkpoints, got {output_dir!r}")
    init = cfg.train.init_checkpoint
    if eval_only:
        if not init:
            raise ConfigValueError("evaluation needs weights: set train.init_checkpoint=/path/to/model.pth")
        _check_checkpoint_file(init, "train.init_checkpoint")
    else:
        checkpointer = Checkpointer(torch.nn.Module(), cfg.train.output_dir)
        last = checkpointer.get_checkpoint_file() if resume and checkpointer.has_checkpoint() else ""
        if last:
            _check_checkpoint_file(last, f"named by {os.path.join(cfg.train.output_dir, 'last_checkpoint')}")
        else:
            _check_checkpoint_file(init, "train.init_checkpoint")
        batch = OmegaConf.select(cfg, "dataloader.train.total_batch_size", default=None)
        if isinstance(batch, int) and (batch <= 0 or batch % world_size):
            raise ConfigValueError(
                f"dataloader.train.total_batch_size={batch} must be a positive multiple of the number of "
                f"processes ({world_size})"
            )
    names = [] if eval_only else _names(OmegaConf.select(cfg, "dataloader.train.dataset.names", default=None))
    if eval_only or "evaluator" in cfg.dataloader:  # training evaluates every eval_period and at the end
        names += _names(OmegaConf.select(cfg, "dataloader.test.dataset.names", default=None))
    require_registered(names)
    check_num_classes(cfg, names)


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
    if (
        "broadcast_buffers" in kwargs
        and "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
    ):
        # PyTorch 2.13 renamed detectron2's broadcast_buffers (and warns in every process). The new flag still
        # syncs the buffers once at start-up, which changes nothing here: every rank builds the same buffers.
        kwargs["forward_sync_buffers"] = kwargs.pop("broadcast_buffers")
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
    """Evaluate the weights in ``train.init_checkpoint`` (``--eval-only``), with the inference switches
    (``train.inference``) and test-time augmentation (``dataloader.tta``) of the config."""
    check_config(cfg, eval_only=True)
    model = build_model(cfg)
    load_weights(model, cfg.train.init_checkpoint, strict=True)
    return do_test(cfg, inference_model(cfg, model))


def do_train(cfg, resume: bool = False):
    """Train from ``train.init_checkpoint`` or, with ``resume``, from ``train.output_dir/last_checkpoint``
    (exactly: the data of each iteration and the RNG draws are those of an uninterrupted run, see
    :mod:`recursivedet.engine.loader`). Returns the trainer.

    A loss or gradient that becomes NaN or infinite stops training with a
    :class:`~recursivedet.engine.hooks.NonFiniteLossError` (see :class:`~recursivedet.engine.hooks.NonFiniteCheck`).
    """
    check_config(cfg, resume=resume)
    model = build_model(cfg)
    logger.info(f"Model:\n{model}")
    cfg.optimizer.params.model = model
    scale_lr_to_batch_size(cfg)  # train.reference_batch_size
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    cuda_amp = cfg.train.amp.enabled and torch.device(cfg.train.device).type == "cuda"
    if cfg.train.amp.enabled and not cuda_amp:
        model = autocast_in_training(model)
    model = wrap_ddp(cfg, model)
    trainer = (AMPTrainer if cuda_amp else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = Checkpointer(model, cfg.train.output_dir, trainer=trainer)
    resuming = resume and checkpointer.has_checkpoint()
    # Resuming reloads our own checkpoint: everything must match. Initial weights (e.g. an ImageNet
    # backbone) cover part of the model only.
    checkpointer.strict = resuming
    clip = cfg.train.clip_grad
    clip_hook = GradClipHook(clip.max_norm, clip.norm_type) if clip.enabled else None
    non_finite = NonFiniteCheck(checkpointer, resumed=resuming, clip_hook=clip_hook)
    trainer.register_hooks(
        [
            hooks.IterationTimer(),
            IterationSeedHook(cfg.train.seed, comm.get_rank()) if cfg.train.seed >= 0 else None,
            hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
            clip_hook,
            # after the clipping hook (it reads its gradient norm) and before the checkpointer
            non_finite,
            hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer) if comm.is_main_process() else None,
            EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
            hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter), period=cfg.train.log_period)
            if comm.is_main_process()
            else None,
        ]
    )
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    # The checkpoint stores the iteration that just finished.
    start_iter = trainer.iter + 1 if resuming else 0
    if resuming and comm.is_main_process():
        drop_metrics_from(os.path.join(cfg.train.output_dir, "metrics.json"), start_iter)
    if isinstance(train_loader, TrainLoader):
        train_loader.start_iter = start_iter
    elif start_iter > 0:
        logger.warning(f"{type(train_loader).__name__} cannot skip to iteration {start_iter}: the data order differs")
    with _user_errors_logged_without_traceback():
        try:
            trainer.train(start_iter, cfg.train.max_iter)
        except NonFiniteError as e:
            if isinstance(e, NonFiniteLossError):
                raise
            raise non_finite.stopped(e) from None
    return trainer


def drop_metrics_from(path: str, start_iter: int) -> None:
    """Remove from ``metrics.json`` (one JSON record per line) the records of iterations from ``start_iter`` on:
    an interrupted run logged them after its last checkpoint, and the resumed run logs them again. Rewritten in
    place, since the metrics writer may already hold the file open for appending."""
    if not os.path.isfile(path):
        return

    def kept(line: str) -> bool:
        try:
            return json.loads(line).get("iteration", -1) < start_iter
        except (ValueError, AttributeError):
            return True  # not a record: left as it is

    with open(path, "r+") as f:
        lines = f.readlines()
        keep = [line for line in lines if kept(line)]
        if len(keep) < len(lines):
            f.seek(0)
            f.writelines(keep)
            f.truncate()


class _UserErrorRecord(logging.Filter):
    """Turns detectron2's "Exception during training:" record, with its traceback, into one line when the
    exception is a :class:`UserError`: its message says it all (the traceback stays with RECURSIVEDET_TRACEBACK=1)."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            return True
        if isinstance(error, UserError):
            record.msg, record.args = "Training stopped: %s", (error,)
            record.exc_info = record.exc_text = None
        elif peer_reported_error():  # e.g. a gradient all-reduce whose peer stopped: the peer's error is the cause
            record.msg, record.args = "Training stopped: another process stopped first (%s)", (type(error).__name__,)
            record.exc_info = record.exc_text = None
        return True


@contextmanager
def _user_errors_logged_without_traceback():
    train_loop_logger = logging.getLogger("detectron2.engine.train_loop")  # TrainerBase.train logs with it
    record_filter = _UserErrorRecord()
    train_loop_logger.addFilter(record_filter)
    try:
        yield
    finally:
        train_loop_logger.removeFilter(record_filter)
