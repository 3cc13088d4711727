"""Command line: detectron2's argument parser with the paper switches in ``--help``, and config overrides
that are checked (unknown key or wrong type -> an error naming the key and the closest existing keys)."""

import difflib
import inspect

from detectron2.config import LazyConfig
from detectron2.engine import default_argument_parser
from detectron2.utils.registry import locate
from omegaconf import DictConfig, ListConfig, OmegaConf

from recursivedet.errors import UserError
from recursivedet.switches import switches_help

# ---- --help epilog ---------------------------------------------------------------------------------------
# Extra sections of ``train_net.py --help``: {title: text}. Extend it to document more switches; the paper
# switches come from ``recursivedet.switches.PAPER_SWITCHES``.
HELP_SECTIONS: dict[str, str] = {
    "examples": """\
  train:        train_net.py --config-file configs/recursivedet_R50_300pro_3x.py --num-gpus 8
  batch of 8:   train_net.py --config-file CONFIG dataloader.train.total_batch_size=8 optimizer.lr=1.25e-5
                (lr linear in the batch size; iteration counts: see recursivedet/engine/solver.py)
  evaluate:     train_net.py --config-file CONFIG --eval-only train.init_checkpoint=output/model_final.pth
  resume:       train_net.py --config-file CONFIG --resume      (from train.output_dir/last_checkpoint)
  CPU, 2 procs: train_net.py --config-file configs/recursivedet_shapes_demo.py --num-gpus 2 --dist-url auto
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

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as e:
        raise ConfigOverrideError(f"cannot parse the overrides: {e}") from None
    known = None
    for o in parsed:
        key = o.key_or_group
        if o.is_add():
            continue
        if o.is_delete():
            raise ConfigOverrideError(f"deleting a key (~{key}) is not supported")
        old = _lookup(cfg, key)
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
            raise ConfigOverrideError(
                f"override {o.input_line!r}: {key} expects {_type_name(old)} (currently {old!r}), "
                f"got {_type_name(new)} {new!r}"
            )


def load_config(config_file: str, overrides: list[str] | None = None):
    """Load a LazyConfig file and apply checked overrides."""
    cfg = LazyConfig.load(config_file)
    overrides = list(overrides or [])
    check_overrides(cfg, overrides)
    return LazyConfig.apply_overrides(cfg, overrides)
