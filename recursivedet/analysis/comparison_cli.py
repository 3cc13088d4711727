"""The command-line options every host's comparison with its official code shares
(``python -m recursivedet.analysis.compare``), and the keyword arguments of
:func:`~.comparison_session.compare` they give."""

import argparse


def add_comparison_arguments(
    parser: argparse.ArgumentParser, *, num_images: int = 2, score_tol: float = 1e-4, score_tol_help: str = ""
) -> None:
    """Image sizes, seed, threads, timing runs, tolerances, the training step, ``--json``, and the hidden options
    of the worker processes (:mod:`~.worker_process`)."""
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        action="append",
        metavar=("H", "W"),
        help="an image size; repeat for several (default 800 1216)",
    )
    parser.add_argument(
        "--num-images", type=int, default=num_images, help="further sizes are derived from the last one"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing-runs", type=int, default=5, help="0 skips the timing")
    parser.add_argument("--score-tol", type=float, default=score_tol, help=score_tol_help or None)
    parser.add_argument("--box-tol", type=float, default=1e-4, help="relative to the longer image side")
    parser.add_argument(
        "--train-runs", type=int, default=3, help="timed training steps per side (after two warm-ups); 0 skips"
    )
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step")
    parser.add_argument("--train-size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument(
        "--loss-tol", type=float, default=1e-4, help="relative difference allowed between the first-step losses"
    )
    parser.add_argument("--json", help="write the report here")
    # A worker process of the comparison: its scratch directory, and for training its side.
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--train-worker", choices=("ours", "official"), help=argparse.SUPPRESS)


def comparison_options(args) -> dict:
    """The keyword arguments of :func:`~.comparison_session.compare` that :func:`add_comparison_arguments` parsed."""
    return {
        "image_sizes": args.image_size or [(800, 1216)],
        "num_images": args.num_images,
        "seed": args.seed,
        "threads": args.threads,
        "timing_runs": args.timing_runs,
        "score_tol": args.score_tol,
        "box_tol": args.box_tol,
        "train_runs": args.train_runs,
        "train_batch": args.train_batch,
        "train_size": tuple(args.train_size),
        "loss_tol": args.loss_tol,
    }
