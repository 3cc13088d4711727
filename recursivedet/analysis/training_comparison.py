"""One training step of this project's model and of an official code from the same weights on the same batch,
each in a fresh worker process (``python -m recursivedet.analysis.compare``; float32).

Each process's peak resident memory is then its training's. A step is forward, backward, full-model gradient
clipping and the optimizer step. The first step's total losses are compared, then steps are timed alternating
between the two processes, then each reports its peak memory.
"""

from pathlib import Path

import torch

from recursivedet.analysis.measure import interleaved_timing, load_average, peak_memory_mb, resident_mb, training_batch
from recursivedet.analysis.worker_process import LOSS, MEMORY, serve

SIDES = ("ours", "official")


def serve_training(model, optimizer, inputs: list[dict], clip=None) -> int:
    """Worker side: answer the first step's total loss on ``inputs``, time steps on request, then answer the
    peak resident memory and that before the steps. ``clip``: the config's ``train.clip_grad`` (None: the
    optimizer clips inside its step, as the official ones do)."""
    model.train()
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
    settings, work: Path, converted: dict, runs: int, batch: int, size: tuple[int, int], loss_tol: float
) -> dict:
    """Both training workers (``settings.worker(work, name, ("--train-worker", side))``, see
    :class:`~recursivedet.analysis.worker_process.WorkerProcess`) on ``batch`` random images of ``size`` (h, w)
    (saved as ``work/train_batch.pth``), this project's side from the ``converted`` state dict (saved as
    ``work/project_state.pth``; the official side reads its own from ``work``): first-step losses and their
    relative difference, step times of ``runs`` interleaved runs after two warm-ups, peak resident memory,
    the ratios (ours / official), and whether the losses agree within ``loss_tol`` (relative)."""
    torch.save(training_batch(settings.seed, batch, tuple(size)), work / "train_batch.pth")
    torch.save(converted, work / "project_state.pth")
    workers = {side: settings.worker(work, f"train_{side}", ("--train-worker", side)) for side in SIDES}
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
