"""This project's Sparse R-CNN and RecursiveDet next to the official code of each, from the same weights:
outputs, first training-step loss, speed and memory. The command is the library's
``python -m recursivedet.analysis.compare --host SparseRCNN`` (``--help`` describes it; :func:`compare` is the same
as a function); this package is what differs for this host:

- ``adapter``: the host's side of the comparison (options, checkout, model, report headline);
- ``official``: the official model, built, randomised and run in a worker process of its own;
- ``outputs``: this project's model on the same images (compared by ``recursivedet.analysis.output_diff``);
- ``training``: the training workers of both codes;
- ``golden``: the small fixture of the official code that the tests check without a checkout.
"""

from functools import partial

from recursivedet.analysis.comparison_adapter import OfficialCheckoutError
from recursivedet.analysis.comparison_session import compare as compare_host
from recursivedet.analysis.worker_process import WorkerFailed

from .adapter import ADAPTER

compare = partial(compare_host, ADAPTER)
"""``compare(official_root, arch, *, proposals=100, dtype="float32", dense_roi_pe=False, ...)``: the report dict
(:func:`recursivedet.analysis.comparison_session.compare`)."""

__all__ = ["ADAPTER", "OfficialCheckoutError", "WorkerFailed", "compare"]
