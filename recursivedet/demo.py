"""The demo behind ``make demo``: train a small RecursiveDet on the built-in shapes dataset on the CPU,
evaluate it on ``shapes_val``, export predictions and a few drawings, and print where everything is.

    python -m recursivedet.demo [--output DIR] [--num-drawings 6] [key=value ...]

Trailing ``key=value`` pairs override ``configs/recursivedet_shapes_demo.py`` (e.g. ``train.max_iter=100``).
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

from detectron2.data import DatasetCatalog
from detectron2.engine import default_setup

from recursivedet.analysis.paper_rows import CONFIG_ROOT
from recursivedet.engine import ConfigOverrideError, do_train, load_config
from recursivedet.export import main as export_main

DEMO_CONFIG = CONFIG_ROOT / "recursivedet_shapes_demo.py"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m recursivedet.demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="output/shapes_demo", help="output folder (output/shapes_demo)")
    parser.add_argument("--num-drawings", type=int, default=6, help="validation images to draw (6)")
    # Sigmoid focal scores of correct detections of this small model sit around 0.3-0.5.
    parser.add_argument("--vis-threshold", type=float, default=0.3, help="draw detections from this score (0.3)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        cfg = load_config(str(DEMO_CONFIG), [*args.opts, f"train.output_dir={args.output}"])
    except ConfigOverrideError as e:
        parser.error(str(e))
    output = Path(args.output)
    # A fresh run each time (the demo measures training from scratch), but only ever deleting a folder that an
    # earlier demo made: anything else at that path is left alone.
    marker = output / ".recursivedet-demo"
    if output.exists() and any(output.iterdir()):
        if not marker.exists():
            parser.error(f"--output {output} exists and was not made by the demo; choose another folder")
        shutil.rmtree(output)
    output.mkdir(parents=True, exist_ok=True)
    marker.touch()
    default_setup(cfg, argparse.Namespace(config_file=str(DEMO_CONFIG), opts=args.opts, eval_only=False))

    trainer = do_train(cfg)  # evaluates on shapes_val at the end
    train_seconds = time.perf_counter() - start
    metrics = {k: v[0] for k, v in trainer.storage.latest().items() if k.startswith("bbox/")}

    # Draw the detections of a few validation images, through the same export command users run.
    drawings = output / "drawings"
    images = output / "drawing_inputs"
    images.mkdir(parents=True, exist_ok=True)
    for record in DatasetCatalog.get(cfg.dataloader.test.dataset.names)[: args.num_drawings]:
        shutil.copy(record["file_name"], images)
    weights = output / "model_final.pth"
    export_main(
        ["--config-file", str(DEMO_CONFIG), "--weights", str(weights), "--images", str(images)]
        + ["--output", str(drawings), "--visualize", "--vis-threshold", str(args.vis_threshold), *args.opts]
    )
    total = time.perf_counter() - start
    print()
    print(
        f"RecursiveDet demo on shapes_val: AP {metrics.get('bbox/AP', float('nan')):.1f}, "
        f"AP50 {metrics.get('bbox/AP50', float('nan')):.1f}, AP75 {metrics.get('bbox/AP75', float('nan')):.1f}"
    )
    print(f"wall time: {total / 60:.1f} min (training and evaluation {train_seconds / 60:.1f} min)")
    print(f"model:        {weights}")
    print(f"predictions:  {output / 'coco_instances_results.json'} (COCO results format)")
    print(f"drawings:     {drawings / 'visualizations'}")
    print(f"metrics:      {output / 'metrics.json'} (TensorBoard events in {output})")
    return {"metrics": metrics, "seconds": total}


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
