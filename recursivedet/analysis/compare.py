"""Run a host's model next to the official code it reproduces, from the same weights, and compare: outputs, first
training-step loss, speed and memory.

    python -m recursivedet.analysis.compare --host SparseRCNN --arch recursivedet --official-root PATH
    python -m recursivedet.analysis.compare --host SparseRCNN --arch sparse_rcnn --official-root PATH \\
        --proposals 100 --image-size 800 1216 --num-images 2 --seed 0 --json out.json
    python -m recursivedet.analysis.compare --host DiffusionDet --official-root PATH --steps 1 4
    PYTHONPATH=PURE_PYTHON_MMCV python -m recursivedet.analysis.compare --host AdaMixer --official-root PATH
    python -m recursivedet.analysis.compare --host HOST --help      # what HOST compares, and its own options

``--host`` is a project that declares a comparison (``recursivedet.hosts``), ``PATH`` a checkout of its official
code. The official code runs in worker processes of this command with their own ``sys.path``, from a temporary
directory; the processes exchange data through files only. The official model gets seeded random weights with its
symmetric defaults randomised; its state dict is converted with the host's converter and loaded strictly into this
project's model. Each random image goes through both models; the report gives per image and stage the largest
score and box differences and pairs the final detections. ``--timing-runs`` times both (one warm-up, then runs
alternated in ABBA order so that both see the same machine load), ``--train-runs`` compares one training step of
each (first-step losses, step times, peak memory), each side in a fresh process.
``python -m recursivedet.analysis.benchmark --official-root PATH --arch ARCH`` runs the same comparison.

Exit status: 0 when the two codes agree within the tolerances, 1 otherwise, 2 on a usage or setup error.
"""

import argparse
import sys
from pathlib import Path

from recursivedet.errors import run_command
from recursivedet.hosts import Host, hosts

from .comparison_adapter import ComparisonAdapter
from .comparison_cli import add_comparison_arguments, comparison_options
from .comparison_report import print_report, write_report
from .comparison_session import compare, make_settings
from .worker_process import WorkerFailed


def comparison_hosts() -> dict[str, Host]:
    """The hosts that declare a comparison with their official code, by name."""
    return {name: host for name, host in hosts().items() if host.comparison is not None}


def adapter(host: str) -> ComparisonAdapter:
    """The comparison adapter of the host named ``host``."""
    return comparison_hosts()[host].comparison.adapter()


def _parser(chosen: ComparisonAdapter | None) -> argparse.ArgumentParser:
    """The command's options, with those of the ``chosen`` host (none yet: only the shared ones)."""
    parser = argparse.ArgumentParser(
        prog="python -m recursivedet.analysis.compare",
        description=chosen.description if chosen else __doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", required=True, choices=sorted(comparison_hosts()), help="the host compared")
    if chosen is None:
        parser.add_argument("--official-root", required=True, help="checkout of the official code")
        return parser
    parser.add_argument("--official-root", required=True, help=f"checkout of {chosen.official_name}")
    several = len(chosen.archs) > 1
    parser.add_argument(
        "--arch",
        choices=chosen.archs,
        required=several,
        default=None if several else chosen.archs[0],
        help="the official code compared with" + ("" if several else f" (only {chosen.archs[0]})"),
    )
    parser.add_argument("--proposals", type=int, default=chosen.proposals, help=chosen.proposals_help)
    chosen.add_arguments(parser)
    add_comparison_arguments(
        parser, num_images=chosen.num_images, score_tol=chosen.score_tol, score_tol_help=chosen.score_tol_help
    )
    return parser


def _report(report: dict, chosen: ComparisonAdapter, json_path: str | None) -> None:
    print_report(report, chosen.headline(report), chosen.print_images)
    if json_path:
        write_report(report, json_path)


def main(argv=None) -> int:
    """The command; a worker process of a comparison when ``--worker`` is given."""
    argv = sys.argv[1:] if argv is None else list(argv)
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--host")
    name = first.parse_known_args(argv)[0].host
    chosen = adapter(name) if name in comparison_hosts() else None
    args = _parser(chosen).parse_args(argv)  # without a known host: stops with the list of hosts
    options = {key: getattr(args, key) for key in chosen.default_options()}
    if args.worker:
        values = {"proposals": args.proposals, "seed": args.seed, "threads": args.threads}
        settings = make_settings(
            chosen, args.official_root, args.arch, **values, timing_runs=args.timing_runs, **options
        )
        if args.train_worker:
            return chosen.training_worker(settings, Path(args.worker), args.train_worker)
        return chosen.official_worker(settings, Path(args.worker))
    try:
        report = compare(
            chosen, args.official_root, args.arch, proposals=args.proposals, **comparison_options(args), **options
        )
    except WorkerFailed as e:
        sys.stderr.write(e.log)
        return e.status
    _report(report, chosen, args.json)
    return 0 if report["agree"] else 1


def run_for_benchmark(args) -> dict:
    """The comparison for ``python -m recursivedet.analysis.benchmark --official-root PATH --arch ARCH``'s parsed
    arguments (threads, image_size, repeats, train_batch, train_size, json), with the host's other defaults;
    exits as :func:`main` does (1 when the two codes disagree, a failed worker's status with its stderr)."""
    (host,) = [h for h in comparison_hosts().values() if args.arch in h.comparison.archs]
    chosen = host.comparison.adapter()
    try:
        report = compare(
            chosen,
            args.official_root,
            args.arch,
            threads=args.threads or 2,
            image_sizes=[args.image_size],
            timing_runs=args.repeats,
            train_batch=args.train_batch,
            train_size=args.train_size,
        )
    except WorkerFailed as e:
        sys.stderr.write(e.log)
        sys.exit(e.status)
    _report(report, chosen, args.json)
    if not report["agree"]:
        sys.exit(1)
    return report


if __name__ == "__main__":
    run_command(main)
