"""COCO box AP with detectron2's ``COCOEvaluator``."""

import importlib.util

from detectron2.evaluation import COCOEvaluator


def has_fast_coco_eval() -> bool:
    """Whether detectron2's C extension (``detectron2._C``, home of the fast COCOeval) is installed."""
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except (ImportError, ValueError):
        return False


def build_coco_evaluator(dataset_name: str, output_dir: str | None = None, **kwargs) -> COCOEvaluator:
    """A box-AP ``COCOEvaluator`` on ``dataset_name`` that writes ``coco_instances_results.json`` to
    ``output_dir``; it uses the fast COCOeval only when ``detectron2._C`` is available (pycocotools'
    official implementation otherwise, same numbers)."""
    kwargs.setdefault("use_fast_impl", has_fast_coco_eval())
    return COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir, **kwargs)
