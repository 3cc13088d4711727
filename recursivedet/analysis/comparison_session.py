"""One comparison of a host with its official code, from start to report: the checkout checked, the official
worker, the conversion through the host's converter, this project's model on the same images, the outputs compared,
the interleaved timing and the training step (:mod:`~.compare` is the command; the host's part is its
:class:`~.comparison_adapter.ComparisonAdapter`)."""

import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from recursivedet.errors import UserError
from recursivedet.hosts import hosts

from .comparison_adapter import ComparisonAdapter, OfficialCheckoutError, Settings
from .measure import interleaved_timing, load_average, multiply_adds, sample_seconds, timing_summary
from .output_diff import image_sizes as derived_image_sizes
from .output_diff import random_images
from .training_comparison import compare_training
from .worker_process import READY, WorkerProcess


def make_settings(
    adapter: ComparisonAdapter,
    official_root: str,
    arch: str | None,
    *,
    proposals: int | None = None,
    seed: int,
    threads: int,
    timing_runs: int,
    **options,
) -> Settings:
    """The settings of a comparison; ``arch`` None for a host that compares with one official code, ``proposals``
    None for the host's default, ``options`` the host options (their defaults where missing). Raises a
    :class:`~recursivedet.errors.UserError` for an ``arch`` the host does not compare or a bad value."""
    if arch is None and len(adapter.archs) == 1:
        arch = adapter.archs[0]
    if arch not in adapter.archs:
        raise UserError(f"--arch of {adapter.host} must be one of {', '.join(adapter.archs)}, got {arch}")
    proposals = adapter.proposals if proposals is None else proposals
    if proposals < 1:
        raise UserError(f"--proposals must be at least 1, got {proposals}")
    defaults = adapter.default_options()
    unknown = set(options) - set(defaults)
    if unknown:
        raise TypeError(f"{adapter.host}'s comparison has no option {', '.join(sorted(unknown))}")
    options = adapter.settle(arch, {**defaults, **options})
    return Settings(adapter.host, arch, official_root, proposals, seed, threads, timing_runs, options)


def _timing(adapter, settings: Settings, model, official: WorkerProcess, image: torch.Tensor) -> dict:
    """This project's and the official parts on ``image``, ``settings.timing_runs`` interleaved runs each."""
    load_before = load_average()
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    parts = adapter.timed_parts(settings, model, inputs)
    runs = settings.timing_runs
    timing = interleaved_timing(list(parts), lambda part: sample_seconds(parts[part]), official.sample, runs)
    timing["load_average"] = [load_before, load_average()]
    timing["head_gflops"] = multiply_adds(parts["head"])  # the work of the call that was timed
    return timing


def compare(
    adapter: ComparisonAdapter,
    official_root: str,
    arch: str | None = None,
    *,
    proposals: int | None = None,
    image_sizes: Sequence[tuple[int, int]] = ((800, 1216),),
    num_images: int | None = None,
    seed: int = 0,
    threads: int = 2,
    timing_runs: int = 5,
    score_tol: float | None = None,
    box_tol: float = 1e-4,
    train_runs: int = 3,
    train_batch: int = 2,
    train_size: tuple[int, int] = (512, 512),
    loss_tol: float = 1e-4,
    **host_options,
) -> dict:
    """Compare the host of ``adapter`` (``arch``: needed when it compares with several official codes) with the
    official checkout at ``official_root``; the report dict.

    ``num_images`` images: ``image_sizes`` first, then smaller ones (:func:`~.output_diff.image_sizes`).
    ``proposals``, ``num_images`` and ``score_tol`` default to the host's. ``timing_runs`` 0 skips the timing,
    ``train_runs`` 0 the training step. The report's "agree" is true when every image agrees within ``score_tol``
    and ``box_tol`` x the longer image side (as the host compares outputs) and the first training-step losses
    within ``loss_tol`` (relative). Raises :class:`~.comparison_adapter.OfficialCheckoutError` for a path that is
    not a checkout of the official code, :class:`~.worker_process.WorkerFailed` when a worker ends early.
    """
    root = Path(official_root)
    if not adapter.is_checkout(root):
        raise OfficialCheckoutError(
            f"{root} is not a checkout of {adapter.official_name} (no {adapter.official_config})"
        )
    settings = make_settings(
        adapter,
        str(root.resolve()),
        arch,
        proposals=proposals,
        seed=seed,
        threads=threads,
        timing_runs=timing_runs,
        **host_options,
    )
    num_images = adapter.num_images if num_images is None else num_images
    score_tol = adapter.score_tol if score_tol is None else score_tol
    converter = hosts()[adapter.host].converter
    torch.set_num_threads(threads)
    sizes = derived_image_sizes([tuple(s) for s in image_sizes], num_images)
    images = random_images(sizes, seed)

    with tempfile.TemporaryDirectory(prefix="recursivedet_side_by_side_") as tmp:
        work = Path(tmp)
        torch.save(images, work / "images.pth")
        adapter.prepare(settings, work, images)
        official_process = settings.worker(work, "official")
        try:
            official_process.expect(READY)
            state = torch.load(work / "official_state.pth")
            official = torch.load(work / "official_outputs.pth")
            if converter.recognise(state) != settings.arch:
                raise OfficialCheckoutError(f"the official checkpoint is not {settings.arch}")
            converted = converter.convert_official_state_dict(state)
            model = adapter.build_model(settings, converted)
            ours = adapter.run_model(settings, model, images, work)
            timing = _timing(adapter, settings, model, official_process, images[0]) if timing_runs > 0 else None
        finally:
            official_process.close()
        if timing is not None:
            timing = timing_summary(timing, threads, timing_runs, timing.pop("head_gflops"))
        training = None
        if train_runs > 0 and adapter.trains(settings):
            del model  # not needed by the training workers: leave the machine's memory to them
            adapter.prepare_training(settings, work, train_batch)
            training = compare_training(settings, work, converted, train_runs, train_batch, train_size, loss_tol)

    report = {
        "arch": settings.arch,
        "proposals": settings.proposals,
        "seed": seed,
        **adapter.report_settings(settings),
        "score_tol": score_tol,
        "box_tol": box_tol,
        "images": adapter.compare_outputs(sizes, ours, official),
    }
    report["agree"] = all(adapter.agrees(image, score_tol, box_tol) for image in report["images"])
    if timing is not None:
        report["timing"] = timing
    if training is not None:
        report["training"] = training
        report["agree"] = report["agree"] and training["agree"]
    return report
