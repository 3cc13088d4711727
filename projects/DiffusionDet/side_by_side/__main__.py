"""Run this project's DiffusionDet next to the official code from the same weights and random draws, and compare.

    python -m recursivedet.projects.DiffusionDet.side_by_side --official-root PATH
    python -m recursivedet.projects.DiffusionDet.side_by_side --official-root PATH --steps 1 4 \\
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

import argparse
from pathlib import Path

from recursivedet.analysis.comparison_cli import add_comparison_arguments, comparison_options, run_comparison
from recursivedet.errors import run_command

from .official import official_worker
from .report import print_report, write_report
from .session import compare
from .settings import Settings
from .training import training_worker


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--official-root", required=True, help="checkout of the official DiffusionDet code")
    parser.add_argument("--proposals", type=int, default=500)
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 4], help="DDIM step counts compared")
    add_comparison_arguments(
        parser,
        num_images=1,
        score_tol=1e-3,
        score_tol_help="(default 1e-3: the sampling chain amplifies float32 rounding, see the description)",
    )
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.worker:
        settings = Settings(
            args.official_root, args.proposals, tuple(args.steps), args.seed, args.threads, args.timing_runs
        )
        if args.train_worker:
            return training_worker(settings, Path(args.worker), args.train_worker)
        return official_worker(settings, Path(args.worker))
    return run_comparison(
        lambda: compare(args.official_root, proposals=args.proposals, steps=args.steps, **comparison_options(args)),
        print_report,
        write_report,
        args.json,
    )


if __name__ == "__main__":
    run_command(main)
