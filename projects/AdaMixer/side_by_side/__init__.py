"""This project's AdaMixer next to the official AdaMixer code, from the same weights: outputs, first
training-step loss, speed and memory (``python -m recursivedet.projects.AdaMixer.side_by_side --help`` describes
the command; :func:`compare` is the same as a function).

- ``official_import``: importing the official code (an mmdet 2.12 tree) with a pure-Python mmcv 1.3;
- ``official``: the official model, built, randomised and run in a worker process of its own;
- ``settings``: what each process builds its model from, and how a worker process starts;
- ``outputs``: this project's model on the same images;
- ``training``: one training step of each code, in fresh worker processes;
- ``session``: one comparison from start to report;
- ``report``: the report printed, or written as JSON.

The host-independent parts (worker dialogue, output differences, timing, training-step comparison, report
parts) are the library's ``recursivedet.analysis``.
"""

from recursivedet.analysis.worker_process import WorkerFailed

from .report import print_report, write_report
from .session import OfficialCheckoutError, compare

__all__ = ["OfficialCheckoutError", "WorkerFailed", "compare", "print_report", "write_report"]
