"""This project's DiffusionDet next to the official code (ShoufaChen/DiffusionDet), from the same weights and the
same random draws: sampling outputs at several step counts, first training-step loss, speed and memory. The command
is the library's ``python -m recursivedet.analysis.compare --host DiffusionDet`` (``--help`` describes it;
:func:`compare` is the same as a function); this package is what differs for this host:

- ``adapter``: the host's side of the comparison (``--steps``, checkout, model, sampling outputs, report);
- ``official``: the official model, built, randomised and run in a worker process of its own;
- ``random_tape``: the random draws (noise boxes, corruption) both codes take from one tape;
- ``outputs``: this project's model on the same images, and the sampling outputs of both compared;
- ``training``: the training workers of both codes;
- ``report``: the sampling outputs per image and step count as text;
- ``golden``: the small fixture of the official code that the tests check without a checkout.
"""

from functools import partial

from recursivedet.analysis.comparison_adapter import OfficialCheckoutError
from recursivedet.analysis.comparison_session import compare as compare_host
from recursivedet.analysis.worker_process import WorkerFailed

from .adapter import ADAPTER

compare = partial(compare_host, ADAPTER)
"""``compare(official_root, *, proposals=500, steps=(1, 4), ...)``: the report dict
(:func:`recursivedet.analysis.comparison_session.compare`)."""

__all__ = ["ADAPTER", "OfficialCheckoutError", "WorkerFailed", "compare"]
