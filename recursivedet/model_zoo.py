"""Configs by name, from any working directory and any kind of install (as detectron2's ``model_zoo``).

    from recursivedet import model_zoo
    cfg = model_zoo.get_config("recursivedet_R50_300pro_3x.py")           # configs/ of the checkout
    cfg = model_zoo.get_config("ablations/table4_recst.py")
    cfg = model_zoo.get_config("DiffusionDet/diffusiondet_R50.py")        # projects/DiffusionDet/configs/

A name is a path relative to the checkout's ``configs/`` folder (installed as ``recursivedet.configs``), or
``<Project>/<path>`` for ``projects/<Project>/configs/<path>`` (installed as ``recursivedet.projects``). A leading
``configs/`` or ``projects/<Project>/configs/`` is accepted too, so the paths the README shows work from
anywhere. An existing file path is used as it is.
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


def config_names() -> list[str]:
    """Every config name :func:`get_config_file` accepts (library configs, then ``<Project>/...``), sorted."""
    names = [n for n in _config_files(_configs_root()) if not n.startswith(("common/", "models/"))]
    for project in sorted(p for p in _projects_root().iterdir() if (p / "configs").is_dir()):
        names += [
            f"{project.name}/{n}"
            for n in _config_files(project / "configs")
            if not n.startswith(("common/", "models/"))
        ]
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
    close = difflib.get_close_matches(name.removeprefix("configs/"), config_names(), n=3, cutoff=0.5)
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
