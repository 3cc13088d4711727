"""Measuring helpers of the benchmark command and of the comparison with the official code
(``python -m recursivedet.analysis.compare``): timing, a large matrix product's rate, memory,
random inputs, and the timed parts of this project's model.

Times are wall seconds from ``time.perf_counter`` and process CPU seconds (all threads) from
``time.process_time``. GFLOP/s count multiply-adds, as fvcore's FLOP counts do.
"""

import os
import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch
from detectron2.structures import Boxes, Instances

from recursivedet.machine import processor_name
from recursivedet.modeling.linear import onednn_applies, onednn_linear

__all__ = [
    "detectron2_inputs",
    "image_input",
    "interleaved_timing",
    "load_average",
    "matmul_peak_gflops",
    "median_seconds",
    "model_parts",
    "multiply_adds",
    "peak_memory_mb",
    "processor_name",
    "resident_mb",
    "sample_seconds",
    "timing_summary",
    "training_batch",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (CUDA synchronised)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sample_seconds(fn: Callable) -> tuple[float, float]:
    """One run of ``fn`` under ``torch.no_grad`` (a training step enables gradients itself): (wall seconds,
    process CPU seconds)."""
    with torch.no_grad():
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - start_cpu


def interleaved_timing(parts: list[str], ours: Callable, official: Callable, runs: int) -> dict:
    """Alternate single runs of this project's and the official ``parts`` in ABBA order, so that both see the
    same machine load; one warm-up run each first. ``ours`` and ``official`` run one part: fn(part) -> (wall,
    CPU) seconds, e.g. :func:`sample_seconds` here or a request to another process. Returns per side ("ours",
    "official") and part: median ("wall") and minimum ("wall_min") wall time and median CPU time ("cpu")."""
    samplers = {"ours": ours, "official": official}
    samples = {side: {part: [] for part in parts} for side in samplers}
    for part in parts:
        for sampler in samplers.values():
            sampler(part)
        for r in range(runs):
            for side in ("ours", "official") if r % 2 == 0 else ("official", "ours"):
                samples[side][part].append(samplers[side](part))
    return {
        side: {
            part: {
                "wall": statistics.median(w for w, _ in runs_),
                "wall_min": min(w for w, _ in runs_),
                "cpu": statistics.median(c for _, c in runs_),
            }
            for part, runs_ in side_samples.items()
        }
        for side, side_samples in samples.items()
    }


def multiply_adds(fn: Callable) -> float:
    """GFLOPs (multiply-adds, the unit of the paper's tables) of one run of ``fn``, counted while it runs (matrix
    products and convolutions, torch's ``FlopCounterMode``): a rate divides the count and the time of the same
    work, whatever ``fn`` runs (one DDIM step or several, REGO or not)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:  # its module tracker needs autograd on
        fn()
    return counter.get_total_flops() / 2 / 1e9


def timing_summary(timing: dict, threads: int, runs: int, head_gflops: float) -> dict:
    """A comparison's :func:`interleaved_timing` with the ratios (ours / official) of every part, and the head's
    achieved GFLOP/s (``head_gflops``: this project's count of the "head" part, for both sides) against a large
    matmul's measured now."""
    parts = list(timing["ours"])
    summary = {
        "threads": threads,
        "runs": runs,
        **timing,
        "head_gflops": head_gflops,
        "matmul_peak": matmul_peak_gflops(torch.device("cpu")),
        "ratio": {
            part: {k: timing["ours"][part][k] / timing["official"][part][k] for k in ("wall", "wall_min", "cpu")}
            for part in parts
        },
    }
    summary["head_gflop_per_s"] = {side: head_gflops / timing[side]["head"]["wall"] for side in ("ours", "official")}
    summary["head_fraction_of_peak"] = {
        side: v / summary["matmul_peak"]["best"] for side, v in summary["head_gflop_per_s"].items()
    }
    return summary


def load_average() -> float | None:
    """1-minute load average, recorded next to timings: other work on the machine skews them."""
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on every platform
        return None


def matmul_peak_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> dict:
    """Multiply-adds per second (GFLOP/s) of a large fp32 matrix product: through ``torch.mm`` (MKL on the
    CPU) and, on the CPU, through oneDNN (the two kernels the decoder's linear layers choose from, see
    :mod:`recursivedet.modeling.linear`); "best" is the machine's practical peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    rate = {"torch_mm": size**3 / median_seconds(lambda: a @ b, device, repeats) / 1e9}
    if onednn_applies(a, b):
        rate["onednn"] = size**3 / median_seconds(lambda: onednn_linear(a, b), device, repeats) / 1e9
    rate["best"] = max(rate.values())
    return rate


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def resident_mb() -> float:
    """Current resident memory of this process in MB (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_memory_mb()


def image_input(h: int, w: int, device: torch.device, seed: int = 0) -> dict:
    """A detectron2 inference input: a random uint8 image (3, h, w) with its size."""
    g = torch.Generator().manual_seed(seed)
    return {
        "image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8).to(device),
        "height": h,
        "width": w,
    }


def training_batch(seed: int, num_images: int, size: tuple[int, int], num_boxes: int = 5, num_classes: int = 80):
    """Random images with random ground truth, as plain tensors: (image uint8 (3, H, W), boxes (G, 4) pixel
    xyxy, classes (G,)) per image."""
    g = torch.Generator().manual_seed(seed + 2)
    h, w = size
    batch = []
    for _ in range(num_images):
        xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w, h]) * 0.7
        wh = (torch.rand(num_boxes, 2, generator=g) * 0.25 + 0.05) * torch.tensor([w, h])
        image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
        batch.append((image, torch.cat([xy, xy + wh], dim=1), torch.randint(0, num_classes, (num_boxes,), generator=g)))
    return batch


def detectron2_inputs(batch) -> list[dict]:
    """:func:`training_batch` as detectron2 training inputs (dicts with "image" and "instances")."""
    inputs = []
    for image, boxes, classes in batch:
        instances = Instances(tuple(image.shape[-2:]))
        instances.gt_boxes = Boxes(boxes)
        instances.gt_classes = classes
        inputs.append({"image": image, "height": image.shape[-2], "width": image.shape[-1], "instances": instances})
    return inputs


def model_parts(model, inputs: list[dict]) -> dict[str, Callable]:
    """The timed parts of this project's model (in eval mode) on detectron2 inference ``inputs``:

    - "backbone": the backbone on the preprocessed images;
    - "head": the decoder on the backbone's maps (the model's ``run_head``), i.e. everything after the backbone
      up to the stage outputs (list over stages of logits (B, N, K) and boxes (B, N, 4)); neither REGO nor the
      postprocessing; for DiffusionDet one sampling step's decoder;
    - "model": the whole forward pass, from the uint8 images to the final detections.

    The preprocessed images and the backbone's maps that "backbone" and "head" start from are computed once,
    here. Run the parts under ``torch.no_grad``.
    """
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        maps = model.run_backbone(images)
    return {
        "backbone": lambda: model.run_backbone(images),
        "head": lambda: model.run_head(images, maps),
        "model": lambda: model(inputs),
    }
