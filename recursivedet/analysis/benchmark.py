"""Latency, throughput and memory of a config's model: a benchmark command, not a test.

    python -m recursivedet.analysis.benchmark --config-file SparseRCNN/recursivedet_R50_100pro_3x.py
    python -m recursivedet.analysis.benchmark --config-file CONFIG --proposals 100 300 500 --sizes 512x512 800x1216
    python -m recursivedet.analysis.benchmark --config-file CONFIG --device cuda --json bench.json [key=value ...]
    python -m recursivedet.analysis.benchmark --official-root PATH --arch recursivedet --threads 2 --json sbs.json
    python -m recursivedet.analysis.benchmark --official-root PATH --arch diffusiondet --threads 2
    PYTHONPATH=PURE_PYTHON_MMCV python -m recursivedet.analysis.benchmark --official-root PATH --arch adamixer

Prints a table and optionally writes JSON: parameters, GFLOPs (fvcore multiply-adds), the median latency
(after warm-up runs) of the whole model, the backbone and the decoder head on one image, one training step
(forward, backward, gradient clipping, the config's optimizer) on a batch of images with random boxes, the
process's peak memory, and the head's achieved GFLOP/s next to a large fp32 matrix product measured in the
same run (through torch.mm and, on the CPU, oneDNN). ``--proposals`` and ``--sizes`` sweep the whole-model
latency. On CUDA every timing is synchronised. Compare figures only within
one run: absolute times vary between machines and with other load.

With ``--official-root`` (a checkout of the official RecursiveDet, Sparse R-CNN, DiffusionDet or AdaMixer code) it
runs the side-by-side comparison of ``python -m recursivedet.analysis.compare`` for the host that compares with
``--arch``, with that host's defaults (AdaMixer's needs a pure-Python mmcv 1.3, see its README) instead: both
models from the same converted weights, their outputs checked to agree, inference and training-step times
interleaved in the same run, peak training memory, and the ratios (this project / official).
"""

import argparse
import json

import torch
from detectron2.config import instantiate

from recursivedet.analysis.measure import (
    detectron2_inputs,
    image_input,
    matmul_peak_gflops,
    median_seconds,
    model_parts,
    multiply_adds,
    peak_memory_mb,
    training_batch,
)
from recursivedet.analysis.model_cost import flops_by_module
from recursivedet.engine import build_model, load_config, load_weights
from recursivedet.errors import run_command
from recursivedet.hosts import hosts


def benchmark(cfg, image_size, repeats, train_batch, train_size, proposals_sweep, sizes_sweep) -> dict:
    device = torch.device(cfg.train.device)
    model = build_model(cfg).eval()
    h, w = image_size
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "image_size": [h, w],
        "params": sum(p.numel() for p in model.parameters()),
        "num_proposals": model.num_proposals,
    }
    result["gflops"] = flops_by_module(model, h, w)[""]

    parts = model_parts(model, [image_input(h, w, device)])
    result["head_gflops"] = multiply_adds(parts["head"])  # what is timed as the head, counted as it runs
    with torch.no_grad():
        for part in ("model", "backbone", "head"):
            result[f"{part}_s"] = median_seconds(parts[part], device, repeats)
    result["head_gflop_per_s"] = result["head_gflops"] / result["head_s"]
    result["matmul_peak"] = matmul_peak_gflops(device)
    result["head_fraction_of_peak"] = result["head_gflop_per_s"] / result["matmul_peak"]["best"]

    model.train()
    num_classes = model.decoder.stages[0].class_logits.out_features
    batch = detectron2_inputs(training_batch(0, train_batch, train_size, num_classes=num_classes))
    # The config's optimizer and gradient clipping, as train_net.py runs them.
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    clip = cfg.train.clip_grad
    params = [p for p in model.parameters() if p.requires_grad]

    def step():
        losses = model(batch)
        optimizer.zero_grad(set_to_none=True)
        sum(losses.values()).backward()
        if clip.enabled:
            torch.nn.utils.clip_grad_norm_(params, clip.max_norm, norm_type=clip.norm_type)
        optimizer.step()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    result["train_step_s"] = median_seconds(step, device, max(1, repeats // 2), warmup=1)
    result["train_batch"] = [train_batch, *train_size]
    if device.type == "cuda":
        result["peak_memory_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # the process's peak resident memory
        result["peak_memory_mb"] = peak_memory_mb()

    model.eval()
    sweep = []
    for n in proposals_sweep:
        cfg.model.num_proposals = n
        swept = build_model(cfg).eval()
        for sh, sw in sizes_sweep:
            image = [image_input(sh, sw, device)]
            with torch.no_grad():
                seconds = median_seconds(lambda swept=swept, image=image: swept(image), device, repeats)
            sweep.append({"proposals": n, "size": [sh, sw], "model_s": seconds})
    result["sweep"] = sweep
    return result


def format_result(r: dict) -> str:
    lines = [
        f"device {r['device']}, {r['threads']} threads, image 3x{r['image_size'][0]}x{r['image_size'][1]}, "
        f"{r['num_proposals']} proposals",
        f"parameters            {r['params']:,}",
        f"GFLOPs                {r['gflops']:.1f} (head {r['head_gflops']:.1f})",
        f"whole model           {r['model_s'] * 1e3:.1f} ms",
        f"backbone              {r['backbone_s'] * 1e3:.1f} ms",
        f"decoder head          {r['head_s'] * 1e3:.1f} ms",
        f"head GFLOP/s          {r['head_gflop_per_s']:.1f} = {100 * r['head_fraction_of_peak']:.0f}% of a large "
        f"matmul's {r['matmul_peak']['best']:.1f} ("
        + ", ".join(f"{k} {v:.1f}" for k, v in r["matmul_peak"].items() if k != "best")
        + ")",
        f"training step         {r['train_step_s'] * 1e3:.1f} ms "
        f"(batch {r['train_batch'][0]} x {r['train_batch'][1]}x{r['train_batch'][2]}, 5 boxes each)",
        f"peak memory           {r['peak_memory_mb']:.0f} MB",
    ]
    if r["sweep"]:
        lines.append("whole model by proposals and image size (ms):")
        lines += [
            f"  {s['proposals']:4d} proposals  {s['size'][0]}x{s['size'][1]}  {s['model_s'] * 1e3:.1f}"
            for s in r["sweep"]
        ]
    return "\n".join(lines)


def _inference_variants(cfg, args) -> dict:
    """The inference variants of :mod:`recursivedet.analysis.inference_variants` (imported when used)."""
    from .inference_variants import benchmark_variants, format_variants

    model = build_model(cfg)
    if args.weights:
        load_weights(model, args.weights, strict=True)
    result = benchmark_variants(model, args.image_size, args.repeats)
    result["config"] = args.config_file
    print(format_variants(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", metavar="FILE", help="the config to benchmark (not with --official-root)")
    parser.add_argument("--official-root", metavar="PATH", help="compare with this official checkout instead")
    parser.add_argument(
        "--arch",
        choices=[arch for h in hosts().values() if h.comparison for arch in h.comparison.archs],
        default="recursivedet",
        help="with --official-root: the official code it is a checkout of (diffusiondet: 500 proposals, 1 and 4 "
        "DDIM steps; adamixer: 300 queries)",
    )
    parser.add_argument("--image-size", type=_size, default=(800, 1216), metavar="HxW")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: the config's train.device)")
    parser.add_argument("--train-batch", type=int, default=2)
    parser.add_argument("--train-size", type=_size, default=(512, 512), metavar="HxW")
    parser.add_argument("--proposals", type=int, nargs="*", default=[], help="sweep: numbers of proposals")
    parser.add_argument("--sizes", type=_size, nargs="*", default=[], metavar="HxW", help="sweep: image sizes")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--inference-variants",
        action="store_true",
        help="time eager float32, bfloat16, torch.compile, TorchScript and ONNX in one run instead "
        "(recursivedet.analysis.inference_variants)",
    )
    parser.add_argument("--weights", metavar="FILE", help="with --inference-variants: the checkpoint to time")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    args = parser.parse_args(argv)
    if args.official_root:
        ignored = [
            flag
            for flag, given in (
                ("--config-file", args.config_file),
                ("--device", args.device),
                ("--proposals", args.proposals),
                ("--sizes", args.sizes),
                ("key=value", args.opts),
            )
            if given
        ]
        if ignored:
            parser.error(
                f"--official-root compares the R50-FPN models of the official code on the CPU: {', '.join(ignored)} "
                "would be ignored"
            )
        from .compare import run_for_benchmark

        return run_for_benchmark(args)
    if not args.config_file:
        parser.error("--config-file is required (or --official-root for the comparison with the official code)")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.opts) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(args.config_file, overrides)
    cfg.train.init_checkpoint = ""  # random weights: timing does not depend on them
    if args.inference_variants:
        return _inference_variants(cfg, args)
    sizes = args.sizes or ([args.image_size] if args.proposals else [])
    result = benchmark(cfg, args.image_size, args.repeats, args.train_batch, args.train_size, args.proposals, sizes)
    result["config"] = args.config_file
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    run_command(main)
