"""Latency, throughput and memory of a config's model: a benchmark command, not a test.

    python -m recursivedet.analysis.benchmark --config-file configs/recursivedet_R50_100pro_3x.py
    python -m recursivedet.analysis.benchmark --config-file CONFIG --proposals 100 300 500 --sizes 512x512 800x1216
    python -m recursivedet.analysis.benchmark --config-file CONFIG --device cuda --json bench.json [key=value ...]
    python -m recursivedet.analysis.benchmark --official-root PATH --arch recursivedet --threads 2 --json sbs.json

Prints a table and optionally writes JSON: parameters, GFLOPs (fvcore multiply-adds), the median latency
(after warm-up runs) of the whole model, the backbone and the decoder head on one image, one training step
(forward, backward, gradient clipping, the config's optimizer) on a batch of images with random boxes, the
process's peak memory, and the head's achieved GFLOP/s next to a large fp32 matrix product measured in the
same run (through torch.mm and, on the CPU, oneDNN). ``--proposals`` and ``--sizes`` sweep the whole-model
latency. On CUDA every timing is synchronised. Compare figures only within
one run: absolute times vary between machines and with other load.

With ``--official-root`` (a checkout of the official RecursiveDet or Sparse R-CNN code) it runs the
side-by-side comparison of :mod:`recursivedet.checkpoint.side_by_side` instead: both models from the same
converted weights, their outputs checked to agree, inference and training-step times interleaved in the
same run, peak training memory, and the ratios (this project / official).
"""

import argparse
import json
import resource
import statistics
import sys
import time

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances

from recursivedet.analysis.model_cost import flops_by_module
from recursivedet.engine import build_model, load_config
from recursivedet.modeling.linear import linear, uses_onednn


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn, device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
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


def matmul_peak_gflops(device, size: int = 2048, repeats: int = 5) -> dict:
    """Multiply-adds per second (GFLOP/s) of a large fp32 matrix product: through ``torch.mm`` (MKL on the
    CPU) and, on the CPU, through oneDNN (what the decoder's linear layers use, see
    :mod:`recursivedet.modeling.linear`); "best" is the machine's practical peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    rate = {"torch_mm": size**3 / median_seconds(lambda: a @ b, device, repeats) / 1e9}
    if uses_onednn(a, b):
        rate["onednn"] = size**3 / median_seconds(lambda: linear(a, b), device, repeats) / 1e9
    rate["best"] = max(rate.values())
    return rate


def _image(h: int, w: int, device, seed: int = 0) -> dict:
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


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


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
    flops = flops_by_module(model, h, w)
    result["gflops"] = flops[""]
    result["head_gflops"] = flops.get("decoder", 0.0) + flops.get("rego", 0.0)

    inputs = [_image(h, w, device)]
    with torch.no_grad():
        images = model.preprocess_image(inputs)
        result["model_s"] = median_seconds(lambda: model(inputs), device, repeats)
        result["backbone_s"] = median_seconds(lambda: model.run_backbone(images), device, repeats)
        maps = model.run_backbone(images)
        # The head: everything after the backbone, as in the side-by-side comparison with the official code.
        result["head_s"] = median_seconds(lambda: model.decoder(*model.decoder_inputs(images, maps)), device, repeats)
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
            image = [_image(sh, sw, device)]
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


def _side_by_side(args) -> dict:
    from recursivedet.checkpoint import side_by_side

    argv = ["--official-root", args.official_root, "--arch", args.arch, "--threads", str(args.threads or 2)]
    argv += ["--image-size", *map(str, args.image_size), "--timing-runs", str(args.repeats)]
    argv += ["--train-batch", str(args.train_batch), "--train-size", *map(str, args.train_size)]
    if args.json:
        argv += ["--json", args.json]
    code = side_by_side.main(argv)
    if code:
        sys.exit(code)
    if args.json:
        with open(args.json) as f:
            return json.load(f)
    return {}


def _size(text: str) -> tuple[int, int]:
    h, w = text.lower().split("x")
    return int(h), int(w)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", metavar="FILE", help="the config to benchmark (not with --official-root)")
    parser.add_argument("--official-root", metavar="PATH", help="compare with this official checkout instead")
    parser.add_argument(
        "--arch", choices=("recursivedet", "sparse_rcnn"), default="recursivedet", help="with --official-root"
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
        return _side_by_side(args)
    if not args.config_file:
        parser.error("--config-file is required (or --official-root for the comparison with the official code)")
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = list(args.opts) + ([f"train.device={args.device}"] if args.device else [])
    cfg = load_config(args.config_file, overrides)
    cfg.train.init_checkpoint = ""  # random weights: timing does not depend on them
    sizes = args.sizes or ([args.image_size] if args.proposals else [])
    result = benchmark(cfg, args.image_size, args.repeats, args.train_batch, args.train_size, args.proposals, sizes)
    result["config"] = args.config_file
    print(format_result(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
