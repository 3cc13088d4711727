"""This project's Sparse R-CNN and RecursiveDet next to the official code of each, from the same weights:
outputs, first training-step loss, speed and memory (``python -m recursivedet.projects.SparseRCNN.side_by_side
--help`` describes the command; :func:`compare` is the same as a function).

- ``official``: the official model, built, randomised and run in a worker process of its own;
- ``worker``: the dialogue with the worker processes (requests, answers, failures);
- ``outputs``: this project's model on the same images, and the outputs of both compared;
- ``training``: one training step of each code, in fresh worker processes;
- ``session``: one comparison from start to report;
- ``report``: the report printed, or written as JSON.

The measuring helpers (timing, memory, random inputs) are the library's ``recursivedet.analysis.measure``.
"""

from .report import print_report, write_report
from .session import OfficialCheckoutError, compare
from .worker import WorkerFailed

__all__ = ["OfficialCheckoutError", "WorkerFailed", "compare", "print_report", "write_report"]
