"""Command line: detectron2's argument parser with the paper switches in ``--help``, config overrides that are
checked (unknown key or wrong type -> an error naming the key and the closest existing keys), and a launcher
that reports a user error raised in any of several worker processes once, in one line."""

import argparse
import difflib
import functools
import inspect
import logging
import os
import sys
import tempfile
import traceback

from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser, launch
from detectron2.utils import comm
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from recursivedet.errors import TRACEBACK_ENV, USER_ERROR_EXIT, ConfigFileError, UserError
from recursivedet.model_zoo import get_config_file
from recursivedet.switches import switches_help


def int_at_least(minimum: int):
    """An argparse type: an integer >= ``minimum`` (e.g. ``int_at_least(0)`` for a count that may be 0)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {value}")
        return value

    return parse


# ---- --help epilog ---------------------------------------------------------------------------------------
# Extra sections of ``train_net.py --help``: {title: text}. Extend it to document more switches; the paper
# switches come from ``recursivedet.switches.PAPER_SWITCHES``.
HELP_SECTIONS: dict[str, str] = {
    "examples": """\
  train:        train_net.py --config-file SparseRCNN/recursivedet_R50_300pro_3x.py --num-gpus 8
  batch of 8:   train_net.py --config-file CONFIG dataloader.train.total_batch_size=8 optimizer.lr=1.25e-5
                (lr linear in the batch size; iteration counts: see recursivedet/engine/solver.py)
  evaluate:     train_net.py --config-file CONFIG --eval-only train.init_checkpoint=output/model_final.pth
  resume:       train_net.py --config-file CONFIG --resume      (from train.output_dir/last_checkpoint)
  CPU, 2 procs: train_net.py --config-file SparseRCNN/recursivedet_shapes_demo.py --num-gpus 2 --dist-url auto
  export:       python -m recursivedet.export --config-file CONFIG --weights W.pth --images DIR --output OUT""",
    "overrides": """\
  Trailing key=value pairs override the config (hydra syntax: lists as [a,b], null for None). A key that
  does not exist or a value of the wrong type is an error; add a new key on purpose with +key=value.""",
}


def help_epilog() -> str:
    """The ``--help`` epilog: the paper switches, then :data:`HELP_SECTIONS`."""
    sections = [switches_help()] + [f"{title}:\n{text}" for title, text in HELP_SECTIONS.items()]
    return "\n\n".join(sections)


def argument_parser():
    """detectron2's :func:`default_argument_parser` with our epilog."""
    return default_argument_parser(epilog=help_epilog())


def parse_options_anywhere(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args`` where options may also follow the ``key=value`` overrides (as when an option is added
    at the end of a command run before): the parser's trailing ``opts`` would take them as overrides, so each
    ``-...`` token there, with the plain words after it (its values), moves before the overrides."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    opts = list(getattr(args, "opts", None) or [])
    options, overrides = [], []
    taking_values = False
    for token in opts:
        if token.startswith("-") and len(token) > 1:
            options.append(token)
            taking_values = "=" not in token
        elif taking_values and "=" not in token:
            options.append(token)
        else:
            overrides.append(token)
            taking_values = False
    if not options:
        return args
    return parser.parse_args(argv[: len(argv) - len(opts)] + options + overrides)


# ---- checked overrides -----------------------------------------------------------------------------------
class ConfigOverrideError(UserError, ValueError):
    """An override names a key that does not exist or gives a value of the wrong type."""


_MISSING = object()


def _is_interpolation(value) -> bool:
    return isinstance(value, str) and "${" in value


def _target_parameters(node) -> tuple[dict[str, inspect.Parameter], bool]:
    """Keyword parameters of a LazyCall node's target, and whether it takes any keyword (``**kwargs`` or a
    signature that cannot be inspected)."""
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return {}, False
    target = node._target_
    try:
        target = locate(target) if isinstance(target, str) else target
        params = inspect.signature(target).parameters
    except (TypeError, ValueError, ImportError):
        return {}, True
    any_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    return {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}, any_keyword


def _all_keys(node, prefix: str = "") -> list[str]:
    """Every dotted key of the config, plus the unset keyword parameters of LazyCall targets."""
    keys = []
    if isinstance(node, DictConfig):
        names = [k for k in node.keys() if k != "_target_"]
        params, _ = _target_parameters(node)
        for name in names:
            keys.append(prefix + name)
            keys += _all_keys(node._get_node(name), prefix + name + ".")
        keys += [prefix + p for p in params if p not in names]
    return keys


def _lookup(cfg, key: str):
    """The value at ``key``: _MISSING if absent, None when its type is unknown (an unset keyword of a LazyCall
    target without default, or an interpolation that does not resolve on its own)."""
    *path, last = key.split(".")
    parent = cfg
    for part in path:
        if not isinstance(parent, DictConfig) or part not in parent:
            return _MISSING
        parent = parent._get_node(part)
    if not isinstance(parent, DictConfig):
        return _MISSING
    if last in parent:
        try:
            return OmegaConf.select(cfg, key, throw_on_missing=False)
        except Exception:
            return None
    params, any_keyword = _target_parameters(parent)
    if last in params:
        default = params[last].default
        return None if default is inspect.Parameter.empty else default
    return None if any_keyword else _MISSING


def _type_name(value) -> str:
    if isinstance(value, DictConfig | dict):
        return "dict"
    if isinstance(value, ListConfig | list | tuple):
        return "list"
    return type(value).__name__


def _compatible(old, new) -> bool:
    if old is None or new is None or _is_interpolation(new):
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, float):
        return isinstance(new, int | float)
    if isinstance(old, DictConfig | dict):
        return isinstance(new, dict)
    if isinstance(old, ListConfig | list | tuple):
        return isinstance(new, list | tuple)
    return isinstance(new, type(old))


def check_overrides(cfg, overrides: list[str]) -> None:
    """Raise :class:`ConfigOverrideError` for an override of a missing key (with the closest keys, by
    difflib) or with a value whose type differs from the current one (int is accepted for float; None and
    ``${...}`` interpolations are accepted anywhere). ``+key=value`` adds a key without checks."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    for i, override in enumerate(overrides):
        if "=" not in override and not override.startswith("~"):
            after = (
                f" (it follows {overrides[i - 1]!r}: a value with spaces needs quotes, e.g. "
                f'"{overrides[i - 1]} {override}")'
                if i and "=" in overrides[i - 1]
                else ""
            )
            raise ConfigOverrideError(f"override {override!r} is not key=value{after}")
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        first_line = str(e).splitlines()[0]
        raise ConfigOverrideError(
            f"cannot parse the overrides: {first_line} (see python train_net.py --help)"
        ) from None
    known = None
    for o in parsed:
        key = o.key_or_group
        if o.is_add():
            continue
        if o.is_delete():
            raise ConfigOverrideError(f"deleting a key (~{key}) is not supported")
        if o.is_sweep_override():  # Hydra's grammar reads a,b,c (and ranges, globs) as several values
            raise ConfigOverrideError(
                f"override {o.input_line!r}: a comma-separated value is several values (a sweep); write a list as "
                f"{key}=[...] and quote it in the shell, e.g. '{key}=[{o.input_line.partition('=')[2]}]'"
            )
        old = _lookup(cfg, key)
        if old is _MISSING and (why := _inapplicable_switch(cfg, key)):
            raise ConfigOverrideError(f"override {o.input_line!r}: {why}")
        if old is _MISSING:
            known = known if known is not None else _all_keys(cfg)
            close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
            # the last component alone catches typos in long paths whose prefix is right
            leaf = key.rsplit(".", 1)[-1]
            close += [k for k in known if k not in close and difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]])]
            hint = f"; did you mean: {', '.join(close[:3])}?" if close else ""
            raise ConfigOverrideError(f"override {o.input_line!r}: the config has no key {key!r}{hint}")
        new = o.value()
        if not _compatible(old, new):
            # the override grammar spells None as null; 'None' parses as a string
            hint = " (None is written null)" if new in ("None", "none") else ""
            raise ConfigOverrideError(
                f"override {o.input_line!r}: {key} expects {_type_name(old)} (currently {old!r}), "
                f"got {_type_name(new)} {new!r}{hint}"
            )


def _inapplicable_switch(cfg, key: str) -> str | None:
    """Why paper switch ``key`` does not apply to the host that ``cfg.model`` builds, as the host declares it
    (:attr:`recursivedet.hosts.Host.inapplicable_switches`); None when it declares nothing about ``key``."""
    from detectron2.config.instantiate import _convert_target_to_string, locate
    from omegaconf import OmegaConf

    from recursivedet.hosts import hosts

    target = OmegaConf.select(cfg, "model._target_", default=None)
    if target is None:
        return None
    target = locate(target) if isinstance(target, str) else target
    for host in hosts().values():
        if isinstance(target, type) and host.meta_architecture and issubclass(target, host.meta_architecture):
            why = host.inapplicable_switches.get(key)
            return f"{key} does not apply to {host.name} ({_convert_target_to_string(target)}): {why}" if why else None
    return None


TRAINING_CONFIG_KEYS = ("model", "train", "dataloader", "optimizer", "lr_multiplier")


def check_training_config(cfg, config_file: str, keys=TRAINING_CONFIG_KEYS) -> None:
    """:class:`ConfigFileError` naming the file and the top-level keys it does not define, of those that
    ``train_net.py`` reads (a model-only config such as ``SparseRCNN/models/*.py`` is not a training config)."""
    missing = [k for k in keys if k not in cfg]
    if missing:
        raise ConfigFileError(
            f"config {config_file} defines no {', '.join(missing)}: a training config defines {', '.join(keys)} "
            "(start from one, e.g. model_zoo.get_config('SparseRCNN/recursivedet_shapes_demo.py'), and change what "
            "differs)"
        )


def load_config(config_file: str, overrides: list[str] | None = None):
    """Load a LazyConfig file or config name (:mod:`recursivedet.model_zoo`) and apply checked overrides.
    :class:`ConfigFileError` names a config that does not exist (with the closest names), is no .py/.yaml file
    or has a syntax error (the line); :class:`ConfigOverrideError` a bad override."""
    if "://" not in config_file:
        config_file = get_config_file(config_file)
    if os.path.splitext(config_file)[1] not in (".py", ".yaml", ".yml"):
        raise ConfigFileError(f"config file {config_file} must be a python (.py) or yaml (.yaml) file")
    try:
        cfg = LazyConfig.load(config_file)
    except SyntaxError as e:
        # detectron2 re-raises the parser's error with a message of its own: the line is in the original,
        # without the file name when it is detectron2's own syntax check of the config file
        error = e.__cause__ if isinstance(e.__cause__, SyntaxError) else e
        file = error.filename if error.filename and not error.filename.startswith("<") else config_file
        raise ConfigFileError(f"config file {file}, line {error.lineno}: {error.msg}") from None
    except SystemExit as e:  # a config is executed to be read: an exit there would end the command silently
        raise ConfigFileError(f"config file {config_file} called sys.exit({e.code!r}) while it was loaded") from None
    overrides = list(overrides or [])
    check_overrides(cfg, overrides)
    return LazyConfig.apply_overrides(cfg, overrides)


# ---- several processes -----------------------------------------------------------------------------------
# The folder in which the workers of one launch report their user errors (set in each worker).
ERROR_DIR_ENV = "RECURSIVEDET_WORKER_ERRORS"


def peer_reported_error() -> bool:
    """In a worker process: another worker has already stopped with a user error (so this one's failure, e.g. a
    collective operation that lost its peer, is a consequence, not the cause)."""
    folder = os.environ.get(ERROR_DIR_ENV)
    return bool(folder) and os.path.isdir(folder) and any(os.scandir(folder))


class WorkerError(UserError):
    """A :class:`UserError` that stopped a worker process, re-raised in the launching process (its message)."""


def _report_user_error(main, error_dir: str, *args):
    """Run ``main(*args)`` in a worker; on a :class:`UserError` write its message to ``error_dir`` and exit with
    the user-error status, so the launching process prints it once instead of torch's worker traceback."""
    os.environ[ERROR_DIR_ENV] = error_dir  # where this worker's training log learns that a peer failed first
    try:
        return main(*args)
    except UserError as e:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0"):
            traceback.print_exc()
        message = str(e).strip() or type(e).__name__
        with open(os.path.join(error_dir, f"rank{comm.get_rank()}.txt"), "w", encoding="utf-8") as f:
            f.write(message)
        sys.exit(USER_ERROR_EXIT)


def _first_reported(error_dir: str) -> str | None:
    """The message of the user error written first to ``error_dir`` (the cause; other ranks may have failed
    because of it), None if there is none."""
    reported = []
    for name in os.listdir(error_dir):
        path = os.path.join(error_dir, name)
        with open(path, encoding="utf-8") as f:
            message = f.read()
        if message:  # (empty: a worker stopped while writing, after the first error)
            reported.append((os.stat(path).st_mtime_ns, name, message))
    return min(reported)[2] if reported else None


def launch_reporting_user_errors(main, num_gpus: int, *, num_machines=1, machine_rank=0, dist_url=None, args=()):
    """detectron2's :func:`~detectron2.engine.launch`; with several processes, a :class:`UserError` in any of
    them stops all and is raised here as a :class:`WorkerError` with its message (torch's launcher would
    raise its own exception with the worker's traceback). One process runs ``main`` here: errors propagate."""
    kwargs = dict(num_machines=num_machines, machine_rank=machine_rank, dist_url=dist_url)
    if num_gpus * num_machines <= 1:
        return launch(main, num_gpus, args=args, **kwargs)
    # torch logs a warning for each worker it stops after another one failed: noise before the error
    spawn_logger = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_logger.level
    spawn_logger.setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="recursivedet-errors-") as error_dir:
        try:
            return launch(functools.partial(_report_user_error, main, error_dir), num_gpus, args=args, **kwargs)
        except Exception:
            # whichever exception torch raised (the failed worker, or another one that lost its peer)
            message = _first_reported(error_dir)
            if message is None:
                raise
            raise WorkerError(message) from None
        finally:
            spawn_logger.setLevel(level)
