"""One run of a study (a row and a seed) in a process of its own: train at the study's budget (resuming its own
checkpoint when there is one), evaluate every decoder stage, and write ``result.json`` last, atomically, so
that a run with that file is complete.

    python -m recursivedet.study.run RUN_DIR/spec.json

The study command (:mod:`recursivedet.study`) writes the spec and starts this; it is not meant to be typed.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from detectron2.config import instantiate
from detectron2.engine import default_setup
from omegaconf import OmegaConf

from recursivedet.analysis.measure import processor_name
from recursivedet.engine import do_train, load_config
from recursivedet.errors import run_command
from recursivedet.model_zoo import get_config_file

from .stage_evaluation import evaluate_stages

__all__ = ["RESULT_FILE", "SPEC_FILE", "run_config", "main"]

SPEC_FILE = "spec.json"
RESULT_FILE = "result.json"
METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def run_config(spec: dict):
    """The config of a run: the row's config, the study's overrides, then the row's, then the budget (the lr
    steps scaled to the same fractions of it), seed, evaluation period and output folder."""
    config = get_config_file(spec["config"])
    cfg = load_config(config, [*spec["overrides"], *spec["row_overrides"]])
    iters = spec["iters"]
    old_max_iter = cfg.train.max_iter
    cfg.train.max_iter = iters
    if "steps" in cfg.lr_multiplier:
        cfg.lr_multiplier.steps = [round(s * iters / old_max_iter) for s in cfg.lr_multiplier.steps]
    if "warmup_iters" in cfg.lr_multiplier:
        cfg.lr_multiplier.warmup_iters = min(cfg.lr_multiplier.warmup_iters, max(1, iters // 10))
    cfg.train.seed = spec["seed"]
    cfg.train.eval_period = spec["eval_period"]
    # a checkpoint at every evaluation: an interrupted run loses at most one period
    cfg.train.checkpointer.period = spec["eval_period"] or iters
    cfg.train.checkpointer.max_to_keep = 1
    cfg.train.output_dir = spec["run_dir"]
    return config, cfg


def _curve(run_dir: Path, iters: int) -> list[list[float]]:
    """[[iterations trained, AP], ...] from detectron2's metrics.json (the last entry of an iteration wins; the
    evaluation after training is logged one iteration past the last)."""
    points = {}
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        for line in metrics.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by an interruption
                continue
            if "bbox/AP" in entry:
                points[min(entry["iteration"] + 1, iters)] = entry["bbox/AP"]
    return [[it, ap] for it, ap in sorted(points.items())]


def _stage_count(model, requested: int) -> int:
    """Stages to evaluate: the trained ones, and up to ``requested`` for a shared decoder without REGO (REGO
    follows the decoder's trained last stage)."""
    decoder = model.decoder
    trained = decoder.num_stages
    if decoder.schedule.stage_sharing == "none" or getattr(model, "rego", None) is not None:
        return trained
    return max(trained, requested)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m recursivedet.study.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", help="the run's spec.json")
    args = parser.parse_args(argv)
    spec_path = Path(args.spec)
    spec = json.loads(spec_path.read_text())
    run_dir = Path(spec["run_dir"])
    torch.set_num_threads(spec["threads"])
    config, cfg = run_config(spec)
    default_setup(cfg, argparse.Namespace(config_file=config, opts=[], eval_only=False))

    start = time.perf_counter()
    trainer = do_train(cfg, resume=True)
    train_seconds = time.perf_counter() - start
    model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    final = {k.split("/", 1)[1]: v[0] for k, v in trainer.storage.latest().items() if k.startswith("bbox/")}

    start = time.perf_counter()
    stages = {}
    if model.per_stage_analysis:
        dataset = OmegaConf.select(cfg, "dataloader.test.dataset.names")
        dataset = dataset if isinstance(dataset, str) else dataset[0]
        count = _stage_count(model, spec["max_stages"])
        loader = instantiate(cfg.dataloader.test)
        stages = evaluate_stages(model, loader, dataset, count, spec["score_threshold"])
    result = {
        "row": spec["row"],
        "seed": spec["seed"],
        "iters": spec["iters"],
        "params": sum(p.numel() for p in model.parameters()),
        "trained_stages": model.decoder.num_stages,
        "metrics": {k: final[k] for k in METRICS if k in final},
        "curve": _curve(run_dir, spec["iters"]),
        "stages": stages,
        "train_seconds": train_seconds,
        # rounding, and so the AP of a run, depends on the kernels the processor and thread count select
        "machine": {"processor": processor_name(), "threads": torch.get_num_threads(), "torch": torch.__version__},
        "eval_seconds": time.perf_counter() - start,
    }
    temporary = run_dir / (RESULT_FILE + ".tmp")
    temporary.write_text(json.dumps(result, indent=1))
    temporary.replace(run_dir / RESULT_FILE)
    return result


if __name__ == "__main__":
    run_command(lambda: main(sys.argv[1:]))
