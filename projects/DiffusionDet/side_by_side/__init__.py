"""This project's DiffusionDet next to the official code (ShoufaChen/DiffusionDet), from the same weights and the
same random draws: sampling outputs at several step counts, first training-step loss, speed and memory
(``python -m recursivedet.projects.DiffusionDet.side_by_side --help`` describes the command; :func:`compare` is
the same as a function).

- ``official``: the official model, built, randomised and run in a worker process of its own;
- ``random_tape``: the random draws (noise boxes, corruption) both codes take from one tape;
- ``settings``: what each process builds its model from, and how a worker process starts;
- ``outputs``: this project's model on the same images, and the sampling outputs of both compared;
- ``training``: the training workers;
- ``session``: one comparison from start to report;
- ``report``: the report printed, or written as JSON.

The library's ``recursivedet.analysis`` provides the measuring (``measure``), the worker dialogue
(``worker_process``), the training-step comparison (``training_comparison``) and the report parts.
"""

from recursivedet.analysis.worker_process import WorkerFailed

from .report import print_report, write_report
from .session import OfficialCheckoutError, compare

__all__ = ["OfficialCheckoutError", "WorkerFailed", "compare", "print_report", "write_report"]
