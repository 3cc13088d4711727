"""This project's Sparse R-CNN and RecursiveDet next to the official code of each, from the same weights.

    python -m recursivedet.analysis.compare --host SparseRCNN --official-root PATH --arch recursivedet
    python -m recursivedet.analysis.compare --host SparseRCNN --official-root PATH --arch sparse_rcnn \\
        --proposals 100 --image-size 800 1216 --num-images 2 --seed 0 --json out.json

``PATH`` is a checkout of the official code: bravezzzzzz/RecursiveDet for ``--arch recursivedet``,
PeizeSun/SparseR-CNN for ``--arch sparse_rcnn`` (both keep their package in ``projects/SparseRCNN``).
The official code runs in a worker process with its own ``sys.path``, from a temporary directory; the
processes exchange data through files only.

The official model (R50-FPN, ``--proposals`` proposals) gets seeded random weights, with its LayerNorms,
head biases and initial proposal boxes randomised so that no mistake hides behind symmetric defaults. Its
state dict is converted with ``recursivedet.projects.SparseRCNN.convert.convert_official_state_dict`` and loaded
strictly into this project's model from the config ``models/<arch>.py``.

Each image (random uint8, one per batch) goes through both models in eval mode. Reported per image: for
every stage, the max |score difference| over all proposals x classes and the max |box difference| in pixels
(so the top-k selection plays no part); for the final detections, paired by (proposal, class), the same.

Timings (``--threads``; one warm-up, then runs of both models alternated in ABBA order so that both see the
same machine load; median and minimum wall time, median process CPU time) of the decoder head alone
(everything after the backbone: for the official RecursiveDet this includes its image PE maps, made outside
its head, whose equivalent this project computes inside the decoder) and of the whole model, on the first
image size, with the ratios this project / official. The head's achieved GFLOP/s (this project's FLOP count
of the head, for both sides) is printed next to a large matrix product measured in the same run.

Training (``--train-runs``, float32 only): one training step per side (forward, backward, full-model
gradient clipping, AdamW, each code's own optimizer set-up) on ``--train-batch`` random images of
``--train-size`` with 5 random boxes each, from the same converted weights, each in a fresh process: the
first step's total losses are compared (``--loss-tol``, relative), then steps are timed alternating between
the two processes, then each reports its peak resident memory.

Exit status: 0 when every score agrees within ``--score-tol``, every box within ``--box-tol`` x the longer
image side and the first training-step losses within ``--loss-tol``, 1 otherwise, 2 on a usage or setup
error.
"""

from recursivedet.analysis.comparison_adapter import ComparisonAdapter

from .official import OFFICIAL_CONFIG, official_worker
from .outputs import build_project_model, run_project_model
from .training import training_worker


class SparseRCNNComparison(ComparisonAdapter):
    host = "SparseRCNN"
    official_config = OFFICIAL_CONFIG
    description = __doc__

    def add_arguments(self, parser):
        parser.add_argument(
            "--dtype",
            choices=("float32", "float64"),
            default="float32",
            help="float64 runs both models in double precision, so that what differs is not float32 rounding. "
            "Some steps stay float32 on both sides (detectron2's Boxes, so the pooled boxes and the final "
            "detections; the image PE) and this project's Sparse R-CNN deltas are decoded by detectron2's "
            "Box2BoxTransform, which works in float32: expect ~1e-7 relative there, ~1e-14 elsewhere",
        )
        parser.add_argument(
            "--dense-roi-pe",
            action="store_true",
            help="this project's model pools positional maps with RoIAlign (the official way) instead of its "
            "closed-form RoI PE; implied by --dtype float64, as the closed form computes in float32",
        )

    def settle(self, arch, options):
        dense = options["dense_roi_pe"] or (options["dtype"] == "float64" and arch == "recursivedet")
        return {**options, "dense_roi_pe": dense}

    def official_worker(self, settings, work):
        return official_worker(settings, work)

    def training_worker(self, settings, work, side):
        return training_worker(settings, work, side)

    def build_model(self, settings, state_dict):
        return build_project_model(settings.arch, settings.proposals, state_dict, settings.dtype, settings.dense_roi_pe)

    def run_model(self, settings, model, images, work):
        return run_project_model(model, images)

    def trains(self, settings):
        return settings.dtype == "float32"

    def report_settings(self, settings):
        roi_pe = "dense" if settings.dense_roi_pe else "config default"
        return {"dtype": settings.dtype, "roi_pe": roi_pe if settings.arch == "recursivedet" else "none"}

    def headline(self, report):
        return (
            f"{report['arch']}: {report['proposals']} proposals, seed {report['seed']}, {report['dtype']}, "
            f"RoI PE {report['roi_pe']}, "
            f"tolerances: score {report['score_tol']:g}, box {report['box_tol']:g} x longer side"
        )


ADAPTER = SparseRCNNComparison()
