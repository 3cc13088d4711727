"""This project's Sparse R-CNN and RecursiveDet next to the official code of each, from the same weights:
outputs, first training-step loss, speed and memory (``python -m recursivedet.projects.SparseRCNN.side_by_side
--help`` describes the command; :func:`compare` is the same as a function).

- ``official``: the official model, built, randomised and run in a worker process of its own;
- ``settings``: what each process builds its model from, and how a worker process starts;
- ``outputs``: this project's model on the same images (compared by ``recursivedet.analysis.output_diff``);
- ``training``: one training step of each code, in fresh worker processes;
- ``session``: one comparison from start to report;
- ``report``: the report printed, or written as JSON.

The measuring helpers (timing, memory, random inputs) are the library's ``recursivedet.analysis.measure``, the
dialogue with the worker processes its ``recursivedet.analysis.worker_process``.
"""

from recursivedet.analysis.worker_process import WorkerFailed

from .report import print_report, write_report
from .session import OfficialCheckoutError, compare

__all__ = ["OfficialCheckoutError", "WorkerFailed", "compare", "print_report", "write_report"]
