"""Training machinery: command line, checked config overrides, trainer set-up, hooks, checkpoints and a
training data loader whose order survives a resume."""

from recursivedet.errors import ConfigFileError, ConfigValueError

from .checkpoint import Checkpointer, CheckpointError, load_weights
from .cli import (
    HELP_SECTIONS,
    ConfigOverrideError,
    WorkerError,
    argument_parser,
    check_overrides,
    check_training_config,
    launch_reporting_user_errors,
    load_config,
    parse_options_anywhere,
)
from .hooks import GradClipHook, IterationSeedHook, NonFiniteCheck, NonFiniteLossError
from .loader import (
    DatasetNotFoundError,
    TestLoader,
    TrainLoader,
    dataset_categories,
    get_dataset_dicts,
    require_registered,
)
from .solver import BackboneLRFactor, warmup_multistep
from .train_loop import (
    DeviceError,
    build_model,
    check_config,
    check_device,
    check_num_classes,
    do_test,
    do_train,
    evaluate,
)

__all__ = [
    "HELP_SECTIONS",
    "BackboneLRFactor",
    "CheckpointError",
    "Checkpointer",
    "ConfigFileError",
    "ConfigOverrideError",
    "ConfigValueError",
    "DatasetNotFoundError",
    "DeviceError",
    "GradClipHook",
    "IterationSeedHook",
    "NonFiniteCheck",
    "NonFiniteLossError",
    "TestLoader",
    "TrainLoader",
    "WorkerError",
    "argument_parser",
    "check_training_config",
    "build_model",
    "check_config",
    "check_device",
    "check_num_classes",
    "check_overrides",
    "dataset_categories",
    "do_test",
    "do_train",
    "evaluate",
    "get_dataset_dicts",
    "launch_reporting_user_errors",
    "load_config",
    "parse_options_anywhere",
    "load_weights",
    "require_registered",
    "warmup_multistep",
]
