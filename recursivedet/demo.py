"""The demo behind ``make demo``: train a small RecursiveDet on the built-in shapes dataset on the CPU,
evaluate it on ``shapes_val``, export predictions and a few drawings, and print where everything is.

    python -m recursivedet.demo [--output DIR] [--num-drawings 6] [key=value ...]

Trailing ``key=value`` pairs override ``SparseRCNN/recursivedet_shapes_demo.py`` (e.g. ``train.max_iter=100``).
``--num-drawings 0`` skips the drawings. Exit status: 0 after a complete run, 1 if the evaluation produced no
AP or a drawn image could not be read, 2 for a wrong argument.
"""

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup

from recursivedet.engine import ConfigOverrideError, do_train, load_config
from recursivedet.engine.cli import int_at_least
from recursivedet.engine.output_folder import LOCK_FILE, output_folder
from recursivedet.errors import run_command
from recursivedet.export import main as export_main
from recursivedet.export import parse_score
from recursivedet.model_zoo import get_config_file

DEMO_CONFIG = get_config_file("SparseRCNN/recursivedet_shapes_demo.py")


# What the demo wrote into its folder: the fingerprint of its config.yaml (every training or evaluation run
# rewrites that file) and, once complete, of every file.
DEMO_RECORD = ".recursivedet-demo"


def _fingerprint(path: Path) -> list[int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _files(folder: Path) -> dict[str, list[int]]:
    return {
        str(p.relative_to(folder)): _fingerprint(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name not in (DEMO_RECORD, LOCK_FILE)
    }


def _write_record(marker: Path, record: dict) -> None:
    marker.write_text(json.dumps(record))


def not_only_the_demos(folder: Path) -> str | None:
    """Why ``folder`` holds something an earlier demo did not write (None: it holds only the demo's files): no
    record of a demo, a config.yaml another run rewrote, or (after a complete demo) a file added or changed."""
    try:
        record = json.loads((folder / DEMO_RECORD).read_text())
        config = record["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return "it exists and was not made by the demo"
    if _fingerprint(folder / "config.yaml") != config:
        return "another run wrote into it after the demo (its config.yaml changed)"
    if "files" in record:
        changed = [name for name, fingerprint in _files(folder).items() if record["files"].get(name) != fingerprint]
        if changed:
            return f"files that the demo did not write are in it: {', '.join(changed[:3])}"
    return None


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m recursivedet.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="output/shapes_demo", help="output folder (output/shapes_demo)")
    parser.add_argument(
        "--num-drawings", type=int_at_least(0), default=6, help="validation images to draw, 0 for none (6)"
    )
    # Sigmoid focal scores of correct detections of this small model sit around 0.3-0.5.
    parser.add_argument("--vis-threshold", type=parse_score, default=0.3, help="draw detections from this score (0.3)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    return parser


def main(argv=None) -> dict:
    """Run the demo (``argv`` as ``sys.argv[1:]``). Returns ``{"metrics": {"bbox/AP": ..., ...}, "seconds":
    wall time, "drawings": folder of the drawings or None, "exit_status": 0 or 1}`` (1: no AP, or an image
    to draw could not be read; the reason is printed on stderr). Arguments are all checked before training."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        cfg = load_config(DEMO_CONFIG, [*args.opts, f"train.output_dir={args.output}"])
    except ConfigOverrideError as e:
        parser.error(str(e))
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        parser.error(f"--output {output} is an existing file, not a folder")
    # A fresh run each time (the demo measures training from scratch), but only ever deleting what an earlier
    # demo wrote: a folder another command wrote into (e.g. train_net.py with a config built on the demo's,
    # which shares its output_dir) is left alone.
    if output.exists() and any(output.iterdir()):
        if (problem := not_only_the_demos(output)) is not None:
            parser.error(f"--output {output}: {problem}; choose another folder, or move what you want to keep")
        shutil.rmtree(output)
    with output_folder(str(output), "the demo"):  # no other command writes into it meanwhile
        return _run(args, cfg, output, start)


def _run(args, cfg, output: Path, start: float) -> dict:
    """:func:`main` once the arguments are checked and the output folder is the demo's."""
    marker = output / DEMO_RECORD
    default_setup(cfg, argparse.Namespace(config_file=DEMO_CONFIG, opts=args.opts, eval_only=False))
    _write_record(marker, {"config": _fingerprint(output / "config.yaml")})

    trainer = do_train(cfg)  # evaluates on the test dataset at the end
    train_seconds = time.perf_counter() - start
    metrics = {k: v[0] for k, v in trainer.storage.latest().items() if k.startswith("bbox/")}
    problems = []
    if not math.isfinite(metrics.get("bbox/AP", math.nan)):
        problems.append(f"the evaluation on {cfg.dataloader.test.dataset.names} produced no AP (see the log above)")

    weights = output / "model_final.pth"
    drawings = None
    if args.num_drawings:
        # Draw the detections of a few validation images, through the same export command users run.
        drawings = output / "drawings"
        images = output / "drawing_inputs"
        images.mkdir(parents=True, exist_ok=True)
        for record in DatasetCatalog.get(cfg.dataloader.test.dataset.names)[: args.num_drawings]:
            shutil.copy(record["file_name"], images)
        exported = export_main(
            ["--config-file", DEMO_CONFIG, "--weights", str(weights), "--images", str(images)]
            + ["--output", str(drawings), "--visualize", "--vis-threshold", str(args.vis_threshold), *args.opts]
        )
        if exported.skipped:
            problems.append(f"{len(exported.skipped)} image(s) could not be drawn (see the warnings above)")
    _write_record(marker, {"config": _fingerprint(output / "config.yaml"), "files": _files(output)})
    total = time.perf_counter() - start
    print()
    print(
        f"RecursiveDet demo on {cfg.dataloader.test.dataset.names}: AP {metrics.get('bbox/AP', math.nan):.1f}, "
        f"AP50 {metrics.get('bbox/AP50', math.nan):.1f}, AP75 {metrics.get('bbox/AP75', math.nan):.1f}"
    )
    print(f"wall time: {total / 60:.1f} min (training and evaluation {train_seconds / 60:.1f} min)")
    print(f"model:        {weights}")
    print(f"predictions:  {output / 'coco_instances_results.json'} (COCO results format)")
    print(f"drawings:     {drawings / 'visualizations' if drawings else 'none (--num-drawings 0)'}")
    print(f"metrics:      {output / 'metrics.json'} (TensorBoard events in {output})")
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return {"metrics": metrics, "seconds": total, "drawings": drawings, "exit_status": 1 if problems else 0}


if __name__ == "__main__":
    run_command(lambda: main()["exit_status"])
