"""Importing the official AdaMixer code (an mmdet 2.12 tree) in a worker process.

It needs ``mmcv`` 1.3.x; the pure-Python release (``pip install --no-deps mmcv==1.3.3 addict yapf six
terminaltables``) has no compiled ops, and none is used on the CPU path (AdaMixer's sampling is
``F.grid_sample``, its focal loss falls back to PyTorch off CUDA). Its ``mmcv.ops`` still loads the compiled
extension when imported, so an empty stand-in module takes its place: any compiled op called would raise.
"""

import sys
import types
from pathlib import Path

OFFICIAL_CONFIG = "configs/adamixer/adamixer_r50_300_query_crop_mstrain_480-800_3x_coco.py"


def _compiled_op(name: str):
    def missing(*args, **kwargs):
        raise NotImplementedError(f"mmcv compiled op {name} is not available (pure-Python mmcv)")

    return missing


def _stand_in_extension() -> types.ModuleType:
    module = types.ModuleType("mmcv._ext")
    module.__file__ = "<no compiled mmcv ops>"

    def attribute(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _compiled_op(name)

    module.__getattr__ = attribute
    return module


def import_official(root: Path):
    """The official checkout's ``mmdet`` (with ``mmcv`` from the environment) and mmcv's ``Config``."""
    sys.modules.setdefault("mmcv._ext", _stand_in_extension())
    sys.path.insert(0, str(root))
    import mmcv
    import mmdet
    from mmcv import Config

    if not str(Path(mmdet.__file__).resolve()).startswith(str(root.resolve())):
        raise ImportError(f"mmdet was imported from {mmdet.__file__}, not from the official checkout {root}")
    if not mmcv.__version__.startswith("1.3"):
        raise ImportError(f"the official code needs mmcv 1.3.x, found {mmcv.__version__}")
    return Config
