"""Run this project's AdaMixer next to the official AdaMixer code from the same weights and compare.

    python -m recursivedet.analysis.compare --host AdaMixer --official-root PATH
    python -m recursivedet.analysis.compare --host AdaMixer --official-root PATH --proposals 300 \\
        --image-size 800 1216 --num-images 2 --threads 2 --json out.json

``PATH`` is a checkout of MCG-NJU/AdaMixer. The official code needs ``mmcv`` 1.3.x importable: the
pure-Python release is enough (``pip install --no-deps mmcv==1.3.3 addict yapf six terminaltables``, into this
environment or a folder on ``PYTHONPATH``); its compiled ops are not used on the CPU. The official code runs in
a worker process with its own ``sys.path``, from a temporary directory; the processes exchange data through
files only.

The official model (R50, ``--proposals`` queries) gets seeded random weights, with its LayerNorms, biases,
zero-initialised layers and initial boxes randomised so that no mistake hides behind symmetric defaults. Its
state dict is converted with ``recursivedet.projects.AdaMixer.convert`` and loaded strictly into this project's
model (``AdaMixer/models/adamixer.py``).

Each image (random uint8, one per batch) goes through both models in eval mode. Reported per image: for every
stage, the max |score difference| over all queries x classes and the max |box difference| in pixels; for the
final detections (top-N of N x K, no NMS), paired by (query, class), the same.

Timings (``--threads``; one warm-up, then runs of both models alternated in ABBA order; median and minimum wall
time, median process CPU time) of the head (everything after the backbone and neck: the query generator and the
six stages; the official head also selects its top-N) and of the whole model, on the first image size, with
the ratios this project / official.

Training (``--train-runs``): one training step per side (forward, backward, gradient clipping at norm 1,
AdamW, each code's own optimizer set-up) on ``--train-batch`` random images of ``--train-size`` with 5 random
boxes each, from the same converted weights, each in a fresh process: the first step's total losses are
compared (``--loss-tol``, relative), then steps are timed alternating between the two processes, then each
reports its peak resident memory.

Exit status: 0 when every score agrees within ``--score-tol``, every box within ``--box-tol`` x the longer
image side and the first training-step losses within ``--loss-tol``, 1 otherwise, 2 on a usage or setup error.
"""

from recursivedet.analysis.comparison_adapter import ComparisonAdapter

from .official import official_worker
from .official_import import OFFICIAL_CONFIG
from .outputs import build_project_model, run_project_model
from .training import training_worker


class AdaMixerComparison(ComparisonAdapter):
    host = "AdaMixer"
    official_name = "the official AdaMixer code"
    official_config = OFFICIAL_CONFIG
    description = __doc__
    proposals = 300
    proposals_help = "queries (the Table 2 models: 300)"

    def official_worker(self, settings, work):
        return official_worker(settings, work)

    def training_worker(self, settings, work, side):
        return training_worker(settings, work, side)

    def build_model(self, settings, state_dict):
        return build_project_model(settings.proposals, state_dict)

    def run_model(self, settings, model, images, work):
        return run_project_model(model, images)

    def headline(self, report):
        return (
            f"AdaMixer: {report['proposals']} queries, seed {report['seed']}, float32, "
            f"tolerances: score {report['score_tol']:g}, box {report['box_tol']:g} x longer side"
        )


ADAPTER = AdaMixerComparison()
