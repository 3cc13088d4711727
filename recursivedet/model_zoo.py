"""Configs by name, from any working directory and any kind of install (as detectron2's ``model_zoo``).

    from recursivedet import model_zoo
    cfg = model_zoo.get_config("SparseRCNN/recursivedet_R50_300pro_3x.py")  # projects/SparseRCNN/configs/
    cfg = model_zoo.get_config("SparseRCNN/ablations/table4_recst.py")
    cfg = model_zoo.get_config("DiffusionDet/diffusiondet_R50_500pro_60ep.py")
    cfg = model_zoo.get_config("common/train.py")                          # configs/ of the checkout

A name is ``<Project>/<path>`` for ``projects/<Project>/configs/<path>`` (installed as ``recursivedet.projects``),
or a path relative to the checkout's ``configs/`` folder (the shared ``common/`` parts, installed as
``recursivedet.configs``). A leading ``configs/`` or ``projects/<Project>/configs/`` is accepted too, so the paths
the docs show work from anywhere. An existing file path is used as it is.

A name without its project that exactly one project has (``recursivedet_shapes_demo.py``, the Sparse R-CNN host's
configs' names before they moved into their project) still loads that project's config.
"""

import difflib
import os
from pathlib import Path

from recursivedet.errors import ConfigFileError

__all__ = ["ConfigNotFoundError", "config_names", "get_config", "get_config_file"]


class ConfigNotFoundError(ConfigFileError, FileNotFoundError):
    """Neither a config name nor an existing config file."""


def _configs_root() -> Path:
    import recursivedet.configs

    return Path(recursivedet.configs.__file__).parent


def _projects_root() -> Path:
    import recursivedet.projects

    return Path(recursivedet.projects.__file__).parent


def _config_files(root: Path) -> list[str]:
    return sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if p.name != "__init__.py" and "__pycache__" not in p.parts
    )


def _project_config_roots() -> list[Path]:
    return sorted(p / "configs" for p in _projects_root().iterdir() if (p / "configs").is_dir())


def config_names() -> list[str]:
    """Every name of a complete config :func:`get_config_file` accepts (``<Project>/...``, then the library's;
    not the parts under ``common/`` and ``models/``), sorted by project."""
    names = []
    for root in [*_project_config_roots(), _configs_root()]:
        prefix = f"{root.parent.name}/" if root != _configs_root() else ""
        names += [f"{prefix}{n}" for n in _config_files(root) if not n.startswith(("common/", "models/"))]
    return names


def _candidates(name: str) -> list[Path]:
    parts = Path(name).parts
    if parts[:1] == ("configs",):
        parts = parts[1:]
    if parts[:1] == ("projects",) and len(parts) > 2 and parts[2] == "configs":
        parts = (parts[1], *parts[3:])
    if not parts:
        return []
    found = [_configs_root().joinpath(*parts)]
    if len(parts) > 1:
        found.append(_projects_root().joinpath(parts[0], "configs", *parts[1:]))
    # A name without its project: the one project that has it.
    in_projects = [root.joinpath(*parts) for root in _project_config_roots() if root.joinpath(*parts).is_file()]
    if len(in_projects) == 1:
        found += in_projects
    return found


def get_config_file(name: str | os.PathLike) -> str:
    """The path of config ``name`` (see the module docstring); :class:`ConfigNotFoundError` with the closest
    names when there is none."""
    if os.path.isfile(name):
        return os.fspath(name)
    name = os.fspath(name)
    for path in _candidates(name):
        if path.is_file():
            return str(path)
    if os.path.isdir(name):
        raise ConfigNotFoundError(f"config file {name} is a directory, not a config file")
    names = config_names()
    close = difflib.get_close_matches(name.removeprefix("configs/"), names, n=3, cutoff=0.5)
    close += [n for n in names if n.endswith("/" + name) and n not in close][:1]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise ConfigNotFoundError(
        f"config file {name} does not exist, nor is it a config name{hint} "
        "(python -m recursivedet.model_zoo lists the names)"
    )


def get_config(name: str | os.PathLike):
    """The LazyConfig of ``name`` (a config name or file), loaded with detectron2's ``LazyConfig.load``."""
    from detectron2.config import LazyConfig

    return LazyConfig.load(get_config_file(name))


def main(argv=None) -> int:
    """``python -m recursivedet.model_zoo``: the config names, one a line."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m recursivedet.model_zoo",
        description="List the names of the configs that get_config and --config-file take, one a line.",
    )
    parser.parse_args(argv)
    print("\n".join(config_names()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
