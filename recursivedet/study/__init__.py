"""Evidence for the paper's claims at CPU scale: ``python -m recursivedet.study`` trains the ablation rows over
several seeds at one budget and reports AP with its spread, convergence, depth at inference, REGO at inference
and the IoU of each stage's correct detections (see :mod:`recursivedet.study.__main__`)."""

from .rows import DEFAULT_GROUPS, GROUPS, PAPER_ROWS, StudyRow, StudyRowError, parse_row, select_rows
from .stage_evaluation import correct_detection_ious, evaluate_stages

__all__ = [
    "DEFAULT_GROUPS",
    "GROUPS",
    "PAPER_ROWS",
    "StudyRow",
    "StudyRowError",
    "correct_detection_ious",
    "evaluate_stages",
    "parse_row",
    "select_rows",
]
