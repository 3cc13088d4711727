"""One comparison: the official worker, this project's model from its converted weights, the sampling outputs
compared at each step count, the interleaved timing and the training step, assembled into the report."""

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from recursivedet.analysis.measure import (
    interleaved_timing,
    load_average,
    model_parts,
    sample_seconds,
    timing_summary,
)
from recursivedet.analysis.model_cost import flops_by_module
from recursivedet.analysis.output_diff import image_sizes as derived_image_sizes
from recursivedet.analysis.output_diff import random_images
from recursivedet.analysis.training_comparison import compare_training
from recursivedet.analysis.worker_process import READY
from recursivedet.errors import UserError

from ..convert import convert_official_state_dict
from .official import OFFICIAL_CONFIG
from .outputs import build_project_model, compare_sampling, run_project_model, sampling_agrees
from .random_tape import sampling_tape, training_tape
from .settings import Settings

TIMESTEPS = 1000
TRAIN_BOXES = 5  # ground-truth boxes per training image (the default of measure.training_batch)


class OfficialCheckoutError(UserError):
    """The official root is not a checkout of the official DiffusionDet code."""


def _timing(model, official, image: torch.Tensor, steps_list, runs: int) -> dict:
    """This project's and the official head and whole model (at each step count) on ``image``, interleaved."""
    load_before = load_average()
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    parts = model_parts(model, inputs)

    def whole_model(steps):
        def run():
            model.sampler.steps = steps
            return model(inputs)

        return run

    ours = {"head": parts["head"], **{f"model_{s}": whole_model(s) for s in steps_list}}
    timing = interleaved_timing(list(ours), lambda part: sample_seconds(ours[part]), official.sample, runs)
    timing["load_average"] = [load_before, load_average()]
    return timing


def compare(
    official_root: str,
    *,
    proposals: int = 500,
    steps: Sequence[int] = (1, 4),
    image_sizes: Sequence[tuple[int, int]] = ((800, 1216),),
    num_images: int = 1,
    seed: int = 0,
    threads: int = 2,
    timing_runs: int = 5,
    score_tol: float = 1e-3,
    box_tol: float = 1e-4,
    train_runs: int = 3,
    train_batch: int = 2,
    train_size: tuple[int, int] = (512, 512),
    loss_tol: float = 1e-4,
) -> dict:
    """Compare this project's DiffusionDet with the official checkout at ``official_root``; the report dict.

    Both sample each image (one per batch) with each number of DDIM ``steps`` from the same noise; ``timing_runs``
    0 skips the timing, ``train_runs`` 0 the training step. "agree" is true when every stage of every step agrees
    within ``score_tol`` and ``box_tol`` x the longer image side, both keep the same boxes at every renewal, the
    final detections pair up within the same tolerances and the first training-step losses agree within
    ``loss_tol`` (relative). Raises :class:`OfficialCheckoutError` for a path that is not a checkout of the
    official code, :class:`~recursivedet.analysis.worker_process.WorkerFailed` when a worker ends early.
    """
    root = Path(official_root)
    if not (root / OFFICIAL_CONFIG).is_file() or not (root / "diffusiondet").is_dir():
        raise OfficialCheckoutError(
            f"{root} is not a checkout of the official DiffusionDet code (no {OFFICIAL_CONFIG})"
        )
    steps = tuple(sorted(set(steps)))
    if not steps or steps[0] < 1:
        raise UserError(f"--steps must be DDIM step counts >= 1, got {list(steps)}")
    settings = Settings(str(root.resolve()), proposals, steps, seed, threads, timing_runs)
    torch.set_num_threads(threads)
    sizes = derived_image_sizes([tuple(s) for s in image_sizes], num_images)
    images = random_images(sizes, seed)
    tapes = {s: sampling_tape(len(images), proposals, s, seed + s) for s in steps}

    with tempfile.TemporaryDirectory(prefix="recursivedet_side_by_side_") as tmp:
        work = Path(tmp)
        torch.save(images, work / "images.pth")
        torch.save(tapes, work / "sampling_tape.pth")
        official_process = settings.worker(work, "official")
        try:
            official_process.expect(READY)
            converted = convert_official_state_dict(torch.load(work / "official_state.pth"))
            official = torch.load(work / "official_outputs.pth")
            model = build_project_model(proposals, converted)
            ours = run_project_model(model, images, steps, tapes)
            timing = _timing(model, official_process, images[0], steps, timing_runs) if timing_runs > 0 else None
        finally:
            official_process.close()
        if timing is not None:
            timing = timing_summary(timing, threads, timing_runs, flops_by_module(model, *sizes[0])["decoder"])
        training = None
        if train_runs > 0:
            del model  # not needed by the training workers: leave the machine's memory to them
            torch.save(
                training_tape([TRAIN_BOXES] * train_batch, proposals, TIMESTEPS, seed), work / "training_tape.pth"
            )
            training = compare_training(settings, work, converted, train_runs, train_batch, train_size, loss_tol)

    report = {
        "arch": "diffusiondet",
        "proposals": proposals,
        "seed": seed,
        "steps": list(steps),
        "score_tol": score_tol,
        "box_tol": box_tol,
        "images": [],
    }
    for (h, w), a, b in zip(sizes, ours, official, strict=True):
        for s in steps:
            report["images"].append(compare_sampling(a[s], b[s], h, w))
    report["agree"] = all(sampling_agrees(image, score_tol, box_tol) for image in report["images"])
    if timing is not None:
        report["timing"] = timing
    if training is not None:
        report["training"] = training
        report["agree"] = report["agree"] and training["agree"]
    return report
