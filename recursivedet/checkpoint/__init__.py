"""Conversion of official Sparse R-CNN / RecursiveDet checkpoints.

The names below come from :mod:`.convert` on first use, not at import: ``python -m
recursivedet.checkpoint.convert`` imports this package first, and a package that had already imported the
module being run makes ``runpy`` warn that it is found in ``sys.modules``.
"""

import importlib

__all__ = ["CheckpointFormatError", "convert_official_state_dict", "detect_official_architecture"]


def __getattr__(name: str):
    if name in __all__:
        return getattr(importlib.import_module(".convert", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
