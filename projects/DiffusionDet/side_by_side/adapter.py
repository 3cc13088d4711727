"""This project's DiffusionDet next to the official code, from the same weights and random draws.

    python -m recursivedet.analysis.compare --host DiffusionDet --official-root PATH
    python -m recursivedet.analysis.compare --host DiffusionDet --official-root PATH --steps 1 4 \\
        --proposals 500 --image-size 800 1216 --threads 2 --json out.json

``PATH`` is a checkout of ShoufaChen/DiffusionDet (its ``diffusiondet`` package imports ``timm``: install it
beside this project). The official code runs in a worker process with its own ``sys.path``, from a temporary
directory; the processes exchange data through files only.

The official R50 model (``--proposals`` proposals) gets seeded random weights, with its LayerNorms and head
biases randomised, the last box layers scaled down and the class biases set so that box renewal keeps some boxes
and renews others. Its state dict is converted with ``recursivedet.projects.DiffusionDet.convert`` and loaded
strictly into this project's model (``DiffusionDet/models/diffusiondet.py``, with the official ensemble).

Each image (random uint8, one per batch: the official sampling supports one image) is sampled by both models with
each number of DDIM ``--steps`` (eta 1, box renewal, ensemble and NMS as the official config), every random draw
(initial boxes, DDIM noise, renewed boxes) answered from one tape, so that the two runs see the same numbers.
Reported per image and step count: for every step and stage the max |score difference| over all proposals x
classes and the max |box difference| in pixels, the boxes kept at each renewal, and the final detections paired
one to one.

Timings (``--threads``; one warm-up, then runs of both alternated in ABBA order): the decoder head (one sampling
step's six stages on the initial noise boxes) and the whole model at each step count, on the first image size,
with the ratios this project / official, and the head's achieved GFLOP/s next to a large matrix product.

Training (``--train-runs``): one training step per side (forward, backward, full-model gradient clipping, AdamW,
each code's own optimizer set-up) on ``--train-batch`` random images of ``--train-size`` with 5 random boxes
each, corrupted with the same steps, noise and placeholder boxes, each side in a fresh process: the first step's
total losses are compared (``--loss-tol``, relative), then steps are timed alternating between the two
processes, then each reports its peak resident memory.

The score tolerance is 1e-3 here (1e-4 for Sparse R-CNN): the sampling chain amplifies float32 rounding. With
the randomised R50 weights, a relative change of 1e-7 in the input boxes (about one float32 rounding) moves this
project's own stage-1 logits by ~3e-3 and its boxes by ~0.04 px; the two codes differ by ~3e-4 in logits and
~6e-5 in scores at the first step, and by up to ~2.5e-4 in scores after three DDIM steps.

Exit status: 0 when everything agrees within the tolerances, 1 otherwise, 2 on a usage or setup error.
"""

import torch

from recursivedet.analysis.comparison_adapter import ComparisonAdapter
from recursivedet.analysis.measure import model_parts
from recursivedet.errors import UserError

from .official import OFFICIAL_CONFIG, official_worker
from .outputs import build_project_model, compare_sampling, run_project_model, sampling_agrees
from .random_tape import sampling_tape, training_tape
from .report import print_sampling
from .training import training_worker

TIMESTEPS = 1000
TRAIN_BOXES = 5  # ground-truth boxes per training image (the default of measure.training_batch)


class DiffusionDetComparison(ComparisonAdapter):
    host = "DiffusionDet"
    official_name = "the official DiffusionDet code"
    official_config = OFFICIAL_CONFIG
    description = __doc__
    proposals = 500
    num_images = 1
    score_tol = 1e-3
    score_tol_help = "(default 1e-3: the sampling chain amplifies float32 rounding, see the description)"

    def add_arguments(self, parser):
        parser.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="DDIM step counts compared")

    def settle(self, arch, options):
        steps = tuple(sorted(set(options["steps"])))
        if not steps or steps[0] < 1:
            raise UserError(f"--steps must be DDIM step counts >= 1, got {list(steps)}")
        return {**options, "steps": steps}

    def is_checkout(self, root):
        return super().is_checkout(root) and (root / "diffusiondet").is_dir()

    def official_worker(self, settings, work):
        return official_worker(settings, work)

    def training_worker(self, settings, work, side):
        return training_worker(settings, work, side)

    def prepare(self, settings, work, images):
        """The noise of every sampling run, for both codes (:mod:`.random_tape`)."""
        n, seed = settings.proposals, settings.seed
        tapes = {s: sampling_tape(len(images), n, s, seed + s) for s in settings.steps}
        torch.save(tapes, work / "sampling_tape.pth")

    def build_model(self, settings, state_dict):
        return build_project_model(settings.proposals, state_dict)

    def run_model(self, settings, model, images, work):
        return run_project_model(model, images, settings.steps, torch.load(work / "sampling_tape.pth"))

    def timed_parts(self, settings, model, inputs):
        """The head (one sampling step's decoder) and the whole model at each step count."""

        def whole_model(steps):
            def run():
                model.sampler.steps = steps
                return model(inputs)

            return run

        head = model_parts(model, inputs)["head"]
        return {"head": head, **{f"model_{s}": whole_model(s) for s in settings.steps}}

    def compare_outputs(self, sizes, ours, official):
        return [
            compare_sampling(a[s], b[s], h, w)
            for (h, w), a, b in zip(sizes, ours, official, strict=True)
            for s in sorted(a)
        ]

    def agrees(self, image, score_tol, box_tol):
        return sampling_agrees(image, score_tol, box_tol)

    def prepare_training(self, settings, work, batch):
        tape = training_tape([TRAIN_BOXES] * batch, settings.proposals, TIMESTEPS, settings.seed)
        torch.save(tape, work / "training_tape.pth")

    def report_settings(self, settings):
        return {"steps": list(settings.steps)}

    def headline(self, report):
        return (
            f"diffusiondet: {report['proposals']} proposals, DDIM steps {report['steps']}, seed {report['seed']}, "
            f"float32, tolerances: score {report['score_tol']:g}, box {report['box_tol']:g} x longer side"
        )

    def print_images(self, images):
        print_sampling(images)


ADAPTER = DiffusionDetComparison()
