"""Evaluation: COCO box AP."""

from .coco import build_coco_evaluator, has_fast_coco_eval

__all__ = ["build_coco_evaluator", "has_fast_coco_eval"]
