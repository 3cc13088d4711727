"""One comparison: the official worker, this project's AdaMixer from its converted weights, the outputs compared,
the interleaved timing and the training step, assembled into the report."""

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from recursivedet.analysis.measure import interleaved_timing, load_average, model_parts, sample_seconds, timing_summary
from recursivedet.analysis.model_cost import flops_by_module
from recursivedet.analysis.output_diff import compare_image, image_agrees, random_images, to_pixel_xyxy
from recursivedet.analysis.output_diff import image_sizes as derived_image_sizes
from recursivedet.analysis.training_comparison import compare_training
from recursivedet.analysis.worker_process import READY, WorkerProcess
from recursivedet.errors import UserError
from recursivedet.projects.AdaMixer.convert import convert_official_state_dict, recognise

from .official_import import OFFICIAL_CONFIG
from .outputs import build_project_model, run_project_model
from .settings import Settings

TIMED_PARTS = ("head", "model")


class OfficialCheckoutError(UserError):
    """The official root is not a checkout of the official AdaMixer code."""


def _timing(model, official: WorkerProcess, image: torch.Tensor, runs: int) -> dict:
    """This project's and the official head and whole model on ``image``, ``runs`` interleaved runs each."""
    load_before = load_average()
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    parts = model_parts(model, inputs)
    timing = interleaved_timing(list(TIMED_PARTS), lambda part: sample_seconds(parts[part]), official.sample, runs)
    timing["load_average"] = [load_before, load_average()]
    return timing


def compare(
    official_root: str,
    *,
    proposals: int = 300,
    image_sizes: Sequence[tuple[int, int]] = ((800, 1216),),
    num_images: int = 2,
    seed: int = 0,
    threads: int = 2,
    timing_runs: int = 5,
    score_tol: float = 1e-4,
    box_tol: float = 1e-4,
    train_runs: int = 3,
    train_batch: int = 2,
    train_size: tuple[int, int] = (512, 512),
    loss_tol: float = 1e-4,
) -> dict:
    """Compare this project's AdaMixer with the official checkout at ``official_root``; the report dict.

    ``num_images`` images: ``image_sizes`` first, then smaller ones. ``timing_runs`` 0 skips the timing,
    ``train_runs`` 0 the training step. The report's "agree" is true when every score agrees within
    ``score_tol``, every box within ``box_tol`` x the longer image side and the first training-step losses
    within ``loss_tol`` (relative). Raises :class:`OfficialCheckoutError` for a path that is not a checkout of
    the official code, :class:`~recursivedet.analysis.worker_process.WorkerFailed` when a worker ends early.
    """
    root = Path(official_root)
    if not (root / OFFICIAL_CONFIG).is_file():
        raise OfficialCheckoutError(f"{root} is not a checkout of the official AdaMixer code (no {OFFICIAL_CONFIG})")
    settings = Settings(str(root.resolve()), proposals, seed, threads, timing_runs)
    torch.set_num_threads(threads)
    sizes = derived_image_sizes([tuple(s) for s in image_sizes], num_images)
    images = random_images(sizes, seed)

    with tempfile.TemporaryDirectory(prefix="recursivedet_adamixer_side_by_side_") as tmp:
        work = Path(tmp)
        torch.save(images, work / "images.pth")
        official_process = settings.worker(work, "official")
        try:
            official_process.expect(READY)
            state = torch.load(work / "official_state.pth")
            official = torch.load(work / "official_outputs.pth")
            if recognise(state) != "adamixer":
                raise OfficialCheckoutError("the official checkpoint is not AdaMixer's")
            converted = convert_official_state_dict(state)
            model = build_project_model(proposals, converted)
            ours = run_project_model(model, images)
            timing = _timing(model, official_process, images[0], timing_runs) if timing_runs > 0 else None
        finally:
            official_process.close()
        if timing is not None:
            timing = timing_summary(timing, threads, timing_runs, flops_by_module(model, *sizes[0])["decoder"])
        training = None
        if train_runs > 0:
            del model  # not needed by the training workers: leave the machine's memory to them
            training = compare_training(settings, work, converted, train_runs, train_batch, train_size, loss_tol)

    report = {
        "arch": "adamixer",
        "proposals": proposals,
        "seed": seed,
        "score_tol": score_tol,
        "box_tol": box_tol,
        "images": [],
    }
    for (h, w), a, b in zip(sizes, ours, official["results"], strict=True):
        a["stage_pixel_boxes"] = to_pixel_xyxy(a["stage_boxes"], "cxcywh_normalised", h, w)
        b["stage_pixel_boxes"] = to_pixel_xyxy(b["stage_boxes"], official["box_format"], h, w)
        report["images"].append(compare_image(a, b, h, w))
    report["agree"] = all(image_agrees(image, score_tol, box_tol) for image in report["images"])
    if timing is not None:
        report["timing"] = timing
    if training is not None:
        report["training"] = training
        report["agree"] = report["agree"] and training["agree"]
    return report
