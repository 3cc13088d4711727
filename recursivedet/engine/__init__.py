"""Training machinery: command line, checked config overrides, trainer set-up, hooks, checkpoints and a
training data loader whose order survives a resume."""

from .checkpoint import Checkpointer, CheckpointError, load_weights
from .cli import HELP_SECTIONS, ConfigOverrideError, argument_parser, check_overrides, load_config
from .hooks import GradClipHook, IterationSeedHook
from .loader import DatasetNotFoundError, TrainLoader, get_dataset_dicts, require_registered
from .solver import BackboneLRFactor, warmup_multistep
from .train_loop import build_model, do_test, do_train, evaluate

__all__ = [
    "HELP_SECTIONS",
    "BackboneLRFactor",
    "CheckpointError",
    "Checkpointer",
    "ConfigOverrideError",
    "DatasetNotFoundError",
    "GradClipHook",
    "IterationSeedHook",
    "TrainLoader",
    "argument_parser",
    "build_model",
    "check_overrides",
    "do_test",
    "do_train",
    "evaluate",
    "get_dataset_dicts",
    "load_config",
    "load_weights",
    "require_registered",
    "warmup_multistep",
]
