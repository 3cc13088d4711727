"""One training step of both codes from the same weights on the same batch (float32 only).

Each side runs in a fresh worker process, so that each process's peak resident memory is its training's: a
step is forward, backward, full-model gradient clipping and AdamW, with each code's own optimizer set-up
(the official ``Trainer.build_optimizer`` of its ``train_net.py``: one param group per tensor; this
project's config ``<arch>_R50_100pro_3x.py``), on random images with 5 random boxes each. The first step's
total losses are compared, then steps are timed alternating between the two processes, then each reports
its peak memory.
"""

from pathlib import Path

import torch

from recursivedet import model_zoo
from recursivedet.analysis.measure import (
    detectron2_inputs,
    interleaved_timing,
    load_average,
    peak_memory_mb,
    resident_mb,
    training_batch,
)

from .official import build_official, official_optimizer
from .outputs import build_project_model
from .worker import LOSS, MEMORY, Settings, WorkerProcess, serve

SIDES = ("ours", "official")


def training_worker(settings: Settings, work: Path, side: str) -> int:
    """Worker: ``side``'s model from the saved weights (``project_state.pth`` / ``official_state.pth``) and its
    optimizer; answer the first step's total loss on the saved batch (``train_batch.pth``), time steps on
    request, then answer the peak resident memory and that before the steps."""
    torch.set_num_threads(settings.threads)
    if side == "official":
        cfg, model = build_official(settings)
        model.load_state_dict(torch.load(work / "official_state.pth"), strict=True)
        optimizer = official_optimizer(Path(settings.official_root), cfg, model)
        clip = None  # its optimizer clips the whole model's gradient inside step()
    else:
        from detectron2.config import instantiate

        model = build_project_model(settings.arch, settings.proposals, torch.load(work / "project_state.pth"))
        cfg = model_zoo.get_config(f"{settings.arch}_R50_100pro_3x.py")
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        clip = cfg.train.clip_grad if cfg.train.clip_grad.enabled else None
    model.train()
    inputs = detectron2_inputs(torch.load(work / "train_batch.pth"))
    params = [p for p in model.parameters() if p.requires_grad]
    resident_before = resident_mb()

    def step() -> float:
        with torch.enable_grad():
            total = sum(model(inputs).values())
            optimizer.zero_grad()
            total.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip.max_norm, norm_type=clip.norm_type)
            optimizer.step()
        return float(total)

    print(f"{LOSS} {step()!r}", flush=True)  # also the first warm-up step
    serve({"train": step})
    print(f"{MEMORY} {peak_memory_mb()!r} {resident_before!r}", flush=True)
    return 0


def compare_training(
    settings: Settings, work: Path, converted: dict, runs: int, batch: int, size: tuple[int, int], loss_tol: float
) -> dict:
    """Both training workers on ``batch`` random images of ``size`` (h, w), this project's side from the
    ``converted`` state dict (the official side reads its own from ``work``): first-step losses and their
    relative difference, step times of ``runs`` interleaved runs after two warm-ups, peak resident memory,
    the ratios (ours / official), and whether the losses agree within ``loss_tol`` (relative)."""
    torch.save(training_batch(settings.seed, batch, tuple(size)), work / "train_batch.pth")
    torch.save(converted, work / "project_state.pth")
    workers = {side: WorkerProcess(settings, work, f"train_{side}", ("--train-worker", side)) for side in SIDES}
    try:
        losses = {side: float(w.expect(LOSS)) for side, w in workers.items()}
        load_before = load_average()
        timing = interleaved_timing(["train"], workers["ours"].sample, workers["official"].sample, max(1, runs))
        memory = {}
        for side, worker in workers.items():
            worker.end_requests()
            peak, before = (float(v) for v in worker.expect(MEMORY).split())
            memory[side] = {"peak_mb": peak, "before_training_mb": before}
    finally:
        for worker in workers.values():
            worker.close()
    step_timing = {side: timing[side]["train"] for side in timing}
    loss_rel_diff = abs(losses["ours"] - losses["official"]) / abs(losses["official"])
    return {
        "batch": [batch, *size],
        "runs": runs,
        "losses": losses,
        "loss_rel_diff": loss_rel_diff,
        "timing": step_timing,
        "load_average": [load_before, load_average()],
        "memory": memory,
        "ratio": {
            "step_wall": step_timing["ours"]["wall"] / step_timing["official"]["wall"],
            "peak_memory": memory["ours"]["peak_mb"] / memory["official"]["peak_mb"],
        },
        "agree": loss_rel_diff <= loss_tol,
    }
