"""The inference variants of one model timed in the same run: eager float32 (the reference), bfloat16
autocast, ``torch.compile``, and the exported TorchScript and ONNX (onnxruntime) files.

    python -m recursivedet.analysis.benchmark --config-file CONFIG --inference-variants [--weights W] \\
        [--image-size 256x256] [--repeats 20] [--threads 2]

Each variant runs the same image; the printed ratio is the eager float32 time over the variant's (above 1:
faster). The runs are interleaved (every round times each variant once) and the median is taken, so that
load from other processes affects all variants alike. For eager float32 and bfloat16 the decoder head is
also timed and its multiply-adds per second set against a large float32 matrix product of the same run.
"""

import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch

from recursivedet.analysis.measure import image_input, matmul_peak_gflops, model_parts
from recursivedet.analysis.model_cost import flops_by_module
from recursivedet.deploy.formats import FORMATS, load, write
from recursivedet.hosts import host_of_model
from recursivedet.inference.speed import cpu_supports_bf16, with_speed

VARIANTS = ("float32", "bf16", "compile", "torchscript", "onnx")


def _runners(model, image: dict, threads: int, folder: Path) -> tuple[dict, dict]:
    """{variant: fn} to time and {variant: reason} for the variants that cannot run here."""
    runners, skipped = {}, {}
    runners["float32"] = lambda: model([image])
    if cpu_supports_bf16() or model.device.type == "cuda":
        fast = with_speed(model, bf16=True)
        runners["bf16"] = lambda: fast([image])
    else:
        skipped["bf16"] = "no bfloat16 instructions on this processor"
    compiled = with_speed(copy.deepcopy(model), compile=True)
    runners["compile"] = lambda: compiled([image])
    pixels = image["image"].float()
    graph = host_of_model(model).export(copy.deepcopy(model))
    for fmt in ("torchscript", "onnx"):
        try:
            run = load(write(graph, pixels, fmt, folder / FORMATS[fmt]), threads=threads)
        except ImportError as e:  # onnxruntime not installed
            skipped[fmt] = str(e)
            continue
        runners[fmt] = lambda run=run: run(pixels)
    return runners, skipped


def benchmark_variants(model, image_size: tuple[int, int], repeats: int, warmup: int = 3) -> dict:
    """Median seconds per variant (interleaved runs), ratios against eager float32, head GFLOP/s."""
    model = model.eval()
    h, w = image_size
    device = model.device
    image = image_input(h, w, device)
    result = {"image_size": [h, w], "threads": torch.get_num_threads(), "repeats": repeats}
    with tempfile.TemporaryDirectory() as folder, torch.no_grad():
        runners, skipped = _runners(model, image, torch.get_num_threads(), Path(folder))
        compile_start = time.perf_counter()
        for _ in range(warmup):  # compiles on the first calls
            for fn in runners.values():
                fn()
        result["warmup_s"] = time.perf_counter() - compile_start
        times = {name: [] for name in runners}
        for _ in range(repeats):
            for name, fn in runners.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        seconds = {name: statistics.median(t) for name, t in times.items()}
        head_gflops = flops_by_module(model, h, w).get("decoder", 0.0)
        parts = model_parts(model, [image])
        head = {"float32": lambda: parts["head"]()}
        if "bf16" in runners:
            head["bf16"] = lambda: _autocast(parts["head"], device)
        head_times = {name: [] for name in head}
        for _ in range(repeats):
            for name, fn in head.items():
                start = time.perf_counter()
                fn()
                head_times[name].append(time.perf_counter() - start)
    peak = matmul_peak_gflops(device)["best"]
    result["seconds"] = seconds
    result["ratio_vs_float32"] = {name: seconds["float32"] / s for name, s in seconds.items()}
    result["skipped"] = skipped
    result["head_gflops"] = head_gflops
    result["matmul_peak_gflops"] = peak
    result["head"] = {
        name: {"seconds": statistics.median(t), "fraction_of_peak": head_gflops / statistics.median(t) / peak}
        for name, t in head_times.items()
    }
    return result


def _autocast(fn, device):
    with torch.autocast(device.type, dtype=torch.bfloat16):
        return fn()


def format_variants(r: dict) -> str:
    h, w = r["image_size"]
    lines = [
        f"inference variants, image 3x{h}x{w}, {r['threads']} threads, median of {r['repeats']} interleaved runs "
        f"(warm-up and compilation {r['warmup_s']:.1f} s)",
        f"{'variant':12s} {'ms':>9s} {'x float32':>10s}",
    ]
    for name in VARIANTS:
        if name in r["seconds"]:
            lines.append(f"{name:12s} {r['seconds'][name] * 1e3:9.1f} {r['ratio_vs_float32'][name]:9.2f}x")
        else:
            lines.append(f"{name:12s} {'-':>9s}  ({r['skipped'].get(name, 'not run')})")
    for name, head in r["head"].items():
        lines.append(
            f"decoder head {name:8s} {head['seconds'] * 1e3:7.1f} ms, {r['head_gflops'] / head['seconds']:.1f} GFLOP/s "
            f"= {100 * head['fraction_of_peak']:.0f}% of a large float32 matmul's {r['matmul_peak_gflops']:.1f}"
        )
    return "\n".join(lines)
