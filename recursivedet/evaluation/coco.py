"""COCO box AP with detectron2's ``COCOEvaluator``."""

import importlib.util

from detectron2.evaluation import COCOEvaluator


def has_fast_coco_eval() -> bool:
    """Whether detectron2's C extension (``detectron2._C``, home of the fast COCOeval) is installed."""
    try:
        return importlib.util.find_spec("detectron2._C") is not None
    except (ImportError, ValueError):
        return False


def complete_ground_truth(coco_api) -> int:
    """Give every annotation of a pycocotools ``COCO`` the fields COCOeval reads but COCO-format exporters
    often leave out: ``iscrowd`` (0, as detectron2's loader assumes) and ``area`` (the box's w * h; COCOeval
    sorts objects into small / medium / large by it). Returns how many annotations were completed."""
    completed = 0
    for ann in coco_api.dataset.get("annotations", []):
        if "iscrowd" not in ann or "area" not in ann:
            ann.setdefault("iscrowd", 0)
            ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
            completed += 1
    if completed:
        coco_api.createIndex()
    return completed


def build_coco_evaluator(dataset_name: str, output_dir: str | None = None, **kwargs) -> COCOEvaluator:
    """A box-AP ``COCOEvaluator`` on ``dataset_name`` that writes ``coco_instances_results.json`` to
    ``output_dir``; it uses the fast COCOeval only when ``detectron2._C`` is available (pycocotools'
    official implementation otherwise, same numbers). Annotations without ``iscrowd`` or ``area`` are
    completed in memory (:func:`complete_ground_truth`): training accepts such files, so evaluation must too."""
    kwargs.setdefault("use_fast_impl", has_fast_coco_eval())
    evaluator = COCOEvaluator(dataset_name, tasks=("bbox",), output_dir=output_dir, **kwargs)
    complete_ground_truth(evaluator._coco_api)
    return evaluator
