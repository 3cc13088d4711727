"""Run a converted checkpoint next to the official code it came from and compare the outputs.

    python -m recursivedet.checkpoint.side_by_side --official-root PATH --arch recursivedet
    python -m recursivedet.checkpoint.side_by_side --official-root PATH --arch sparse_rcnn \\
        --proposals 100 --image-size 800 1216 --num-images 2 --seed 0 --json out.json

``PATH`` is a checkout of the official code: bravezzzzzz/RecursiveDet for ``--arch recursivedet``,
PeizeSun/SparseR-CNN for ``--arch sparse_rcnn`` (both keep their package in ``projects/SparseRCNN``).
The official code runs in a child process with its own ``sys.path``, from a temporary directory; the
two processes exchange data through files only: the images, the official state dict (``torch.save``)
and the official outputs. For the timing, the child stays up and runs one timed part per request
(on its stdin), so that the runs of both models can be interleaved.

The official model is built from its own config (R50-FPN, ``--proposals`` proposals) with seeded random
weights. The LayerNorm affine parameters, the biases of the head and the initial proposal boxes are
randomised on top of the official initialisation, because their defaults (ones, zeros, identical
whole-image boxes) would hide mistakes such as swapped q/k/v biases or a mirrored box coordinate. Its
state dict is converted with :func:`recursivedet.checkpoint.convert_official_state_dict` and loaded
strictly into this project's model from ``configs/models/<arch>.py``.

Each image (random uint8, one per batch: the official RecursiveDet inference scales boxes for a single
image) goes through both models in eval mode. Reported per image:

- every stage: max |score difference| over all proposals x classes (sigmoid of the logits) and max
  |box difference| in pixels (xyxy), taken from the decoder/head outputs, so the top-k selection plays
  no part;
- final detections: each detection is identified by its (proposal, class) from its own model's last
  stage, so that the two lists are compared pair by pair whatever their order; selections that differ
  (possible only for near-equal scores at the top-k boundary) are counted and reported with the gap.

Timings (``--threads``; one warm-up, then runs of both models alternated in ABBA order so that both
see the same machine load; median and minimum wall time, median process CPU time) of the decoder head
alone (everything after the backbone: for the official RecursiveDet this includes its image PE maps,
made outside its head, whose equivalent this project computes inside the decoder) and of the whole
model, on the first image size, with the ratios this project / official.

The head's achieved GFLOP/s (this project's FLOP count of the head, for both sides) is printed next to a
large matrix product measured in the same run (``torch.mm`` and oneDNN).

Training (``--train-runs``, float32 only): one training step per side (forward, backward, full-model
gradient clipping, AdamW) on ``--train-batch`` random images of ``--train-size`` with 5 random boxes each,
from the same converted weights, each with its own code's optimizer set-up (the official
``Trainer.build_optimizer`` of its ``train_net.py``: one param group per tensor; this project's
``configs/<arch>_R50_100pro_3x.py``). Both run in fresh child processes, so that each process's peak
resident memory is that of its training; the first step's total losses are compared (``--loss-tol``,
relative), then steps are timed alternating between the two processes, then each reports its peak.

Exit status: 0 when every score agrees within ``--score-tol``, every box within ``--box-tol`` x the longer
image side and the first training-step losses within ``--loss-tol``, 1 otherwise, 2 on a usage or setup
error.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

from recursivedet.analysis.benchmark import detectron2_inputs, matmul_peak_gflops, peak_memory_mb, training_batch
from recursivedet.analysis.model_cost import flops_by_module

ARCHS = ("recursivedet", "sparse_rcnn")
PROJECT_ROOT = Path(__file__).resolve().parents[2]
OFFICIAL_CONFIG = "projects/SparseRCNN/configs/sparsercnn.res50.100pro.3x.yaml"


# --------------------------------------------------------------------------------------------------
# Official side (child process only).
# --------------------------------------------------------------------------------------------------


def _import_official(root: Path):
    """Import the official ``sparsercnn`` package of the checkout at ``root``."""
    import torchvision

    sys.path.insert(0, str(root / "projects" / "SparseRCNN"))
    # Its util/misc.py compares float(torchvision.__version__[:3]) with 0.7: "0.29.1" reads as 0.2 and
    # sends it to a torchvision function removed long ago. Any version >= 0.7 takes the modern path.
    version = torchvision.__version__
    torchvision.__version__ = "99.0"
    try:
        import sparsercnn
    finally:
        torchvision.__version__ = version
    return sparsercnn


def _randomise_official(model, seed: int):
    """Break the symmetries of the official initialisation (see the module docstring)."""
    from torch import nn

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.head.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            if "bboxes_delta." in name:
                # Xavier-sized deltas move a box by about its own size per stage; after six Sparse R-CNN
                # stages most boxes lie far outside the image and clip to nothing. Refinements of a trained
                # model are small: keep the last layer at a tenth so the final detections stay meaningful.
                p.mul_(0.1)
        boxes = model.init_proposal_boxes.weight
        n = boxes.shape[0]
        boxes[:, :2] = 0.5 + 0.4 * (torch.rand(n, 2, generator=g) - 0.5)  # centres 0.3 .. 0.7
        boxes[:, 2:] = 0.4 + 0.6 * torch.rand(n, 2, generator=g)  # sizes 0.4 .. 1.0


def _sample(fn) -> tuple[float, float]:
    """One run of ``fn``: (wall seconds, process CPU seconds over all threads)."""
    with torch.no_grad():
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - start, time.process_time() - start_cpu


def _load_average() -> float | None:
    """1-minute load average, recorded next to the timings: other work on the machine skews them."""
    try:
        return os.getloadavg()[0]
    except OSError:  # not available on every platform
        return None


# Lines of the timing dialogue with the official process (its other output never starts with these).
_READY, _SAMPLE = "@@side_by_side ready", "@@side_by_side sample"
_LOSS, _MEMORY = "@@side_by_side loss", "@@side_by_side memory"


def _serve_timing(parts: dict):
    """Official process: run one named part per line read from stdin, answer its times on stdout."""
    print(_READY, flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name not in parts:
            break
        wall, cpu = _sample(parts[name])
        print(f"{_SAMPLE} {wall!r} {cpu!r}", flush=True)


def _build_official(args):
    """(root, config, model) of the official checkout at ``--official-root``, seeded, on the CPU."""
    import warnings

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    warnings.filterwarnings("ignore", category=FutureWarning)  # timm and torch.jit deprecation notices
    torch.set_num_threads(args.threads)
    root = Path(args.official_root).resolve()
    sparsercnn = _import_official(root)
    cfg = get_cfg()
    sparsercnn.add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(root / OFFICIAL_CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SparseRCNN.NUM_PROPOSALS = args.proposals
    torch.set_default_dtype(getattr(torch, args.dtype))
    torch.manual_seed(args.seed)
    return root, cfg, build_model(cfg)


def _official_worker(args) -> int:
    """Build the official model, save its state dict, run the images, save the outputs; then, with
    ``--timing-runs``, time its parts on request (:func:`_serve_timing`)."""
    from torchvision.ops import box_convert

    work = Path(args.worker)
    root, _, model = _build_official(args)
    if args.dtype == "float64" and hasattr(model, "positional_encoding"):
        # Its image PE is computed in float32 whatever the default dtype (explicit cumsum dtype) and would
        # then meet float64 weights; widen its output, as this project's model does.
        model.positional_encoding.register_forward_hook(lambda module, inputs, output: output.double())
    found = "recursivedet" if hasattr(model.head, "rcnn_head_first") else "sparse_rcnn"
    if found != args.arch:
        print(f"error: the checkout at {root} is the official {found} code, not {args.arch}", file=sys.stderr)
        return 2
    _randomise_official(model, args.seed)
    model.eval()
    torch.save(model.state_dict(), work / "official_state.pth")

    captured = []
    model.head.register_forward_hook(lambda module, inputs, output: captured.append(output))
    results = []
    images = torch.load(work / "images.pth")
    with torch.no_grad():
        for image in images:
            captured.clear()
            h, w = image.shape[-2:]
            (out,) = model([{"image": image, "height": h, "width": w}])
            logits, boxes = captured[-1]  # (T, 1, N, K), (T, 1, N, 4)
            inst = out["instances"]
            results.append(
                {
                    "stage_logits": logits[:, 0].clone(),
                    "stage_boxes": boxes[:, 0].clone(),
                    "boxes": inst.pred_boxes.tensor.clone(),
                    "scores": inst.scores.clone(),
                    "classes": inst.pred_classes.clone(),
                }
            )

    box_format = "cxcywh_normalised" if found == "recursivedet" else "xyxy_pixels"
    torch.save({"results": results, "box_format": box_format}, work / "official_outputs.pth")
    if args.timing_runs <= 0:
        print(_READY, flush=True)
        return 0

    image = images[0]
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    with torch.no_grad():
        batch, whwh = model.preprocess_image(inputs)
        maps = model.backbone(batch.tensor)
        features = [maps[f] for f in model.in_features]
        init_boxes = model.init_proposal_boxes.weight.clone()[None]
        init_features = model.init_proposal_features.weight
    if found == "recursivedet":
        # The image PE maps are made outside its head; this project makes the equivalent inside its
        # decoder, so they are part of the head here.
        def head():
            pos = [model.positional_encoding(f) for f in features]
            return model.head(features, init_boxes, init_features, whwh, pos, model.pos_local)

    else:
        pixel_boxes = box_convert(init_boxes, "cxcywh", "xyxy") * whwh[:, None, :]
        head = lambda: model.head(features, pixel_boxes, init_features)
    _serve_timing({"head": head, "model": lambda: model(inputs)})
    return 0


def _resident_mb() -> float:
    """Current resident memory of this process (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return peak_memory_mb()


def _official_trainer(root: Path):
    """The ``Trainer`` class of the checkout's own ``train_net.py`` (for its optimizer)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_train_net", root / "projects/SparseRCNN/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Trainer


def _train_worker(args) -> int:
    """One side's training step (forward, backward, full-model gradient clipping, AdamW step) on the saved
    batch, with each code's own optimizer: the official ``Trainer.build_optimizer`` (one param group per
    tensor, clipping inside its step) or this project's ``configs/<arch>_R50_100pro_3x.py``. Reports the
    first step's total loss, then times steps on request, then its peak resident memory."""
    work = Path(args.worker)
    torch.set_num_threads(args.threads)
    if args.train_worker == "official":
        root, cfg, model = _build_official(args)
        model.load_state_dict(torch.load(work / "official_state.pth"), strict=True)
        optimizer = _official_trainer(root).build_optimizer(cfg, model)
        clip = None  # its optimizer clips the whole model's gradient inside step()
    else:
        from detectron2.config import LazyConfig, instantiate

        model = build_project_model(args.arch, args.proposals, torch.load(work / "project_state.pth"))
        cfg = LazyConfig.load(str(PROJECT_ROOT / "configs" / f"{args.arch}_R50_100pro_3x.py"))
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        clip = cfg.train.clip_grad if cfg.train.clip_grad.enabled else None
    model.train()
    inputs = detectron2_inputs(torch.load(work / "train_batch.pth"))
    params = [p for p in model.parameters() if p.requires_grad]
    resident_before = _resident_mb()

    def step() -> float:
        with torch.enable_grad():
            total = sum(model(inputs).values())
            optimizer.zero_grad()
            total.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(params, clip.max_norm, norm_type=clip.norm_type)
            optimizer.step()
        return float(total)

    print(f"{_LOSS} {step()!r}", flush=True)  # also the first warm-up step
    _serve_timing({"train": step})
    print(f"{_MEMORY} {peak_memory_mb()!r} {resident_before!r}", flush=True)
    return 0


# --------------------------------------------------------------------------------------------------
# This project's side and the comparison (parent process).
# --------------------------------------------------------------------------------------------------


def image_sizes(given: list[tuple[int, int]], num_images: int) -> list[tuple[int, int]]:
    """``num_images`` sizes: the given ones first, then each one smaller than the last (x0.75 in height,
    x0.74 in width), nudged off multiples of 32 so that padding is exercised."""
    sizes = list(given[:num_images])
    while len(sizes) < num_images:
        h, w = sizes[-1]
        h, w = round(h * 0.75), round(w * 0.74)
        sizes.append(tuple(v - 5 if v % 32 == 0 else v for v in (max(h, 40), max(w, 40))))
    return sizes


def random_images(sizes, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def build_project_model(
    arch: str, proposals: int, state_dict: dict, dtype: str = "float32", dense_roi_pe: bool = False
):
    """This project's model from ``configs/models/<arch>.py``, loaded strictly with ``state_dict``.

    With ``dtype="float64"`` the model is built under that default dtype (so that constants such as the
    pixel mean are not rounded to float32 first, as in the official model built the same way).
    ``dense_roi_pe`` pools positional maps with RoIAlign, as the official code does, instead of the
    closed-form RoI PE of the config's default.
    """
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(str(PROJECT_ROOT / "configs" / "models" / f"{arch}.py"))
    cfg.model.num_proposals = proposals
    if dense_roi_pe:
        cfg.model.decoder.analytic_roi_pe = False
    # The official inference keeps the top num_proposals of proposals x classes.
    cfg.model.detections_per_image = proposals
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = instantiate(cfg.model).to(getattr(torch, dtype))
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def run_project_model(model, images) -> list[dict]:
    """Stage outputs and final detections of every image (one per batch)."""
    captured = []
    handle = model.decoder.register_forward_hook(lambda module, inputs, output: captured.append(output))
    results = []
    with torch.no_grad():
        for image in images:
            captured.clear()
            h, w = image.shape[-2:]
            (out,) = model([{"image": image, "height": h, "width": w}])
            stages = captured[-1]
            inst = out["instances"]
            results.append(
                {
                    "stage_logits": torch.stack([logits[0] for logits, _ in stages]),
                    "stage_boxes": torch.stack([boxes[0] for _, boxes in stages]),
                    "boxes": inst.pred_boxes.tensor.clone(),
                    "scores": inst.scores.clone(),
                    "classes": inst.pred_classes.clone(),
                }
            )
    handle.remove()
    return results


def project_timing_parts(model, image: torch.Tensor) -> dict:
    """The timed parts of this project's model on one image: "head" (everything after the backbone,
    through ``run_decoder`` with the backbone answering from precomputed maps) and "model"."""
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    with torch.no_grad():
        batch = model.preprocess_image(inputs)
        maps = model.run_backbone(batch)

    def head():
        with mock.patch.object(model.backbone, "forward", lambda x: maps):
            return model.run_decoder(batch)

    return {"head": head, "model": lambda: model(inputs)}


def interleaved_timing(parts, ours, official, runs: int) -> dict:
    """Alternate single runs of this project's and the official ``parts`` (ABBA order) so that both see the
    same machine load; one warm-up run each first. ``ours`` and ``official`` run one part: fn(part) ->
    (wall, CPU) seconds. Returns per side and part: median and minimum wall time and median CPU time."""
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


def to_pixel_xyxy(boxes: torch.Tensor, box_format: str, h: int, w: int) -> torch.Tensor:
    """(..., 4) boxes in ``box_format`` -> pixel (x0, y0, x1, y1) for an h x w image."""
    from torchvision.ops import box_convert

    if box_format == "xyxy_pixels":
        return boxes
    whwh = torch.tensor([w, h, w, h], dtype=boxes.dtype)
    return box_convert(boxes, "cxcywh", "xyxy") * whwh


def detection_keys(result: dict, h: int, w: int) -> tuple[list[tuple[int, int]], float]:
    """(proposal, class) of each final detection, found in the same model's last-stage outputs.

    A detection carries the sigmoid score of one (proposal, class) and that proposal's box clipped to
    the image (detectron2's postprocessing). The best match on both is taken; the returned residual (max
    over detections of score error + box error / image size) shows that the identification is exact.
    """
    scores = result["stage_logits"][-1].sigmoid()  # (N, K)
    boxes = result["stage_pixel_boxes"][-1].clone()  # (N, 4)
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    keys, residual = [], 0.0
    for box, score, cls in zip(result["boxes"], result["scores"], result["classes"].tolist(), strict=True):
        cost = (scores[:, cls] - score).abs() + (boxes - box).abs().amax(1) / max(h, w)
        p = int(cost.argmin())
        keys.append((p, cls))
        residual = max(residual, float(cost[p]))
    return keys, residual


def compare_image(ours: dict, official: dict, h: int, w: int) -> dict:
    """Per-stage and final-detection differences of one image (both results already in pixel xyxy)."""
    stages = []
    for t in range(max(len(ours["stage_logits"]), len(official["stage_logits"]))):
        if t >= len(ours["stage_logits"]) or t >= len(official["stage_logits"]):
            raise RuntimeError("the two models ran a different number of stages")
        a_logits, b_logits = ours["stage_logits"][t], official["stage_logits"][t]
        a_boxes, b_boxes = ours["stage_pixel_boxes"][t], official["stage_pixel_boxes"][t]
        stages.append(
            {
                "stage": t + 1,
                "max_abs_score_diff": float((a_logits.sigmoid() - b_logits.sigmoid()).abs().max()),
                "max_abs_logit_diff": float((a_logits - b_logits).abs().max()),
                "max_abs_box_diff_px": float((a_boxes - b_boxes).abs().max()),
                "max_abs_box_px": float(b_boxes.abs().max()),
            }
        )

    ours_keys, ours_residual = detection_keys(ours, h, w)
    official_keys, official_residual = detection_keys(official, h, w)
    ours_index = {k: i for i, k in enumerate(ours_keys)}
    official_index = {k: i for i, k in enumerate(official_keys)}
    common = [k for k in ours_keys if k in official_index]
    only = [(k, ours, official) for k in ours_keys if k not in official_index]
    only += [(k, official, ours) for k in official_keys if k not in ours_index]
    final = {
        "detections_ours": len(ours_keys),
        "detections_official": len(official_keys),
        "common": len(common),
        "only_in_one": len(only),
        "identification_residual": max(ours_residual, official_residual),
        "max_abs_score_diff": 0.0,
        "max_abs_box_diff_px": 0.0,
    }
    if common:
        ia = torch.tensor([ours_index[k] for k in common])
        ib = torch.tensor([official_index[k] for k in common])
        final["max_abs_score_diff"] = float((ours["scores"][ia] - official["scores"][ib]).abs().max())
        final["max_abs_box_diff_px"] = float((ours["boxes"][ia] - official["boxes"][ib]).abs().max())
    if only:
        # A selection can differ only when a score sits at the top-k cut: report how far from the cut of
        # the model that left the pair out its own score for the pair is.
        gaps = []
        for (p, c), _, other in only:
            gaps.append(abs(float(other["scores"].min()) - float(other["stage_logits"][-1][p, c].sigmoid())))
        final["only_in_one_max_gap_to_cut"] = max(gaps)
    return {"height": h, "width": w, "stages": stages, "final": final}


class WorkerProcess:
    """A worker of this module in a child process started in the scratch directory ``work``: the official
    inference worker (``--worker``) or a training worker (``--train-worker ours|official``). Its stdout
    carries the ``@@side_by_side`` dialogue lines; its stderr goes to ``<work>/<name>.log``."""

    def __init__(self, args, work: Path, name: str, extra: tuple[str, ...] = ()):
        command = [sys.executable, "-m", "recursivedet.checkpoint.side_by_side", "--worker", str(work), *extra]
        command += ["--official-root", str(Path(args.official_root).resolve()), "--arch", args.arch]
        command += ["--proposals", str(args.proposals), "--seed", str(args.seed), "--threads", str(args.threads)]
        command += ["--timing-runs", str(args.timing_runs), "--dtype", args.dtype]
        env = dict(os.environ)
        # The official code never runs from inside this project; the child must still find this package
        # when it is not installed.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
        self.log = open(work / f"{name}.log", "w+")  # its stderr; lives as long as the process
        self.proc = subprocess.Popen(
            command, cwd=work, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )
        self.work = work

    def expect(self, prefix: str) -> str:
        """The rest of the child's next line starting with ``prefix``; its log and exit if it ends first."""
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        code = self.proc.wait()
        self.log.seek(0)
        sys.stderr.write(self.log.read())
        raise SystemExit(2 if code in (0, 2) else code)

    def outputs(self) -> tuple[dict, dict]:
        """(official state dict, official outputs), once the inference worker has written them."""
        self.expect(_READY)
        state = torch.load(self.work / "official_state.pth")
        return state, torch.load(self.work / "official_outputs.pth")

    def sample(self, part: str) -> tuple[float, float]:
        self.proc.stdin.write(part + "\n")
        self.proc.stdin.flush()
        wall, cpu = self.expect(_SAMPLE).split()
        return float(wall), float(cpu)

    def finish(self) -> str | None:
        """End the requests; the training worker then reports its memory (returned)."""
        self.proc.stdin.close()
        return self.expect(_MEMORY) if "--train-worker" in self.proc.args else None

    def close(self):
        if self.proc.poll() is None:
            if not self.proc.stdin.closed:
                self.proc.stdin.close()  # end of requests: the child leaves its loop and exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:  # e.g. still in a long step after the other side failed
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def compare_training(args, work: Path, converted: dict) -> dict:
    """Training step of both codes from the same weights on the same batch, each in a fresh process (so that
    each process's peak memory is its training's): first-step losses, interleaved step timings, peak
    resident memory."""
    torch.save(training_batch(args.seed, args.train_batch, tuple(args.train_size)), work / "train_batch.pth")
    torch.save(converted, work / "project_state.pth")
    workers = {
        side: WorkerProcess(args, work, f"train_{side}", ("--train-worker", side)) for side in ("ours", "official")
    }
    try:
        losses = {side: float(w.expect(_LOSS)) for side, w in workers.items()}
        load_before = _load_average()
        timing = interleaved_timing(
            ["train"], workers["ours"].sample, workers["official"].sample, max(1, args.train_runs)
        )
        memory = {}
        for side, worker in workers.items():
            peak, before = (float(v) for v in worker.finish().split())
            memory[side] = {"peak_mb": peak, "before_training_mb": before}
    finally:
        for worker in workers.values():
            worker.close()
    return {
        "batch": [args.train_batch, *args.train_size],
        "runs": args.train_runs,
        "losses": losses,
        "loss_rel_diff": abs(losses["ours"] - losses["official"]) / abs(losses["official"]),
        "timing": {side: timing[side]["train"] for side in timing},
        "load_average": [load_before, _load_average()],
        "memory": memory,
    }


def _print_report(report: dict):
    print(
        f"{report['arch']}: {report['proposals']} proposals, seed {report['seed']}, {report['dtype']}, "
        f"RoI PE {report['roi_pe']}, "
        f"tolerances: score {report['score_tol']:g}, box {report['box_tol']:g} x longer side"
    )
    for image in report["images"]:
        h, w = image["height"], image["width"]
        print(f"\nimage 3x{h}x{w}")
        print("  stage  max|d score|  max|d logit|  max|d box| px  (/ longer side)  max|box| px")
        for s in image["stages"]:
            rel = s["max_abs_box_diff_px"] / max(h, w)
            print(
                f"  {s['stage']:>5}  {s['max_abs_score_diff']:11.3e}  {s['max_abs_logit_diff']:11.3e}  "
                f"{s['max_abs_box_diff_px']:13.3e}  ({rel:.3e})        {s['max_abs_box_px']:9.1f}"
            )
        f = image["final"]
        print(
            f"  final detections: ours {f['detections_ours']}, official {f['detections_official']}, "
            f"same (proposal, class) {f['common']}, different {f['only_in_one']}; "
            f"max|d score| {f['max_abs_score_diff']:.3e}, max|d box| {f['max_abs_box_diff_px']:.3e} px "
            f"(identification residual {f['identification_residual']:.1e})"
        )
        if f["only_in_one"]:
            print(f"  differing selections lie within {f['only_in_one_max_gap_to_cut']:.2e} of the top-k cut")
    t = report.get("timing")
    if t:
        h, w = report["images"][0]["height"], report["images"][0]["width"]
        print(f"\ntiming, 3x{h}x{w}, {t['threads']} threads, {t['runs']} runs after one warm-up:")
        before, after = t["load_average"]
        if before is not None:
            print(f"  1-min load average: {before:.2f} before, {after:.2f} after (runs of both interleaved)")
        print("  part   measure        ours ms   official ms   ours/official")
        for part in ("head", "model"):
            for k, label in (("wall", "wall median"), ("wall_min", "wall min"), ("cpu", "CPU median")):
                ours, official = t["ours"][part][k] * 1000, t["official"][part][k] * 1000
                print(f"  {part:<6} {label:<12} {ours:9.1f}   {official:11.1f}   {t['ratio'][part][k]:13.3f}")
        peak = t["matmul_peak"]
        print(
            f"  head: {t['head_gflops']:.1f} GFLOPs (multiply-adds, this project's count) at "
            f"{t['head_gflop_per_s']['ours']:.1f} GFLOP/s = {100 * t['head_fraction_of_peak']['ours']:.0f}% "
            f"(official {t['head_gflop_per_s']['official']:.1f} = {100 * t['head_fraction_of_peak']['official']:.0f}%) "
            f"of a large matmul's {peak['best']:.1f} ("
            + ", ".join(f"{k} {v:.1f}" for k, v in peak.items() if k != "best")
            + ")"
        )
    tr = report.get("training")
    if tr:
        b, h, w = tr["batch"]
        print(f"\ntraining step, {b} images of {h}x{w}, 5 boxes each, {tr['runs']} runs after two warm-ups:")
        print(
            f"  first-step loss: ours {tr['losses']['ours']:.6f}, official {tr['losses']['official']:.6f} "
            f"(relative difference {tr['loss_rel_diff']:.1e})"
        )
        before, after = tr["load_average"]
        if before is not None:
            print(f"  1-min load average: {before:.2f} before, {after:.2f} after (steps of both interleaved)")
        print("  measure                 ours        official   ours/official")
        for k, label in (
            ("wall", "step wall median ms"),
            ("wall_min", "step wall min ms"),
            ("cpu", "step CPU median ms"),
        ):
            ours, official = tr["timing"]["ours"][k] * 1000, tr["timing"]["official"][k] * 1000
            print(f"  {label:<20} {ours:9.1f}   {official:11.1f}   {ours / official:13.3f}")
        for k, label in (("peak_mb", "peak RSS MB"), ("before_training_mb", "RSS before steps MB")):
            ours, official = tr["memory"]["ours"][k], tr["memory"]["official"][k]
            print(f"  {label:<20} {ours:9.0f}   {official:11.0f}   {ours / official:13.3f}")
    print(f"\n{'AGREE' if report['agree'] else 'DISAGREE'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", required=True, help="checkout of the official code")
    parser.add_argument("--arch", required=True, choices=ARCHS)
    parser.add_argument("--proposals", type=int, default=100)
    parser.add_argument(
        "--image-size",
        nargs=2,
        type=int,
        action="append",
        metavar=("H", "W"),
        help="an image size; repeat for several (default 800 1216)",
    )
    parser.add_argument("--num-images", type=int, default=2, help="further sizes are derived from the last one")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--timing-runs", type=int, default=5, help="0 skips the timing")
    parser.add_argument("--score-tol", type=float, default=1e-4)
    parser.add_argument("--box-tol", type=float, default=1e-4, help="relative to the longer image side")
    parser.add_argument(
        "--dtype",
        choices=("float32", "float64"),
        default="float32",
        help="float64 runs both models in double precision, so that what differs is not float32 rounding. "
        "Some steps stay float32 on both sides (detectron2's Boxes, so the pooled boxes and the final "
        "detections; the image PE) and this project's Sparse R-CNN deltas are decoded by detectron2's "
        "Box2BoxTransform, which works in float32: expect ~1e-7 relative there, ~1e-14 elsewhere",
    )
    parser.add_argument(
        "--dense-roi-pe",
        action="store_true",
        help="this project's model pools positional maps with RoIAlign (the official way) instead of its "
        "closed-form RoI PE; implied by --dtype float64, as the closed form computes in float32",
    )
    parser.add_argument(
        "--train-runs", type=int, default=3, help="timed training steps per side (after two warm-ups); 0 skips"
    )
    parser.add_argument("--train-batch", type=int, default=2, help="images per training step")
    parser.add_argument("--train-size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument(
        "--loss-tol", type=float, default=1e-4, help="relative difference allowed between the first-step losses"
    )
    parser.add_argument("--json", help="write the report here")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--train-worker", choices=("ours", "official"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.train_worker:
        return _train_worker(args)
    if args.worker:
        return _official_worker(args)

    from .convert import convert_official_state_dict, detect_official_architecture

    root = Path(args.official_root)
    if not (root / OFFICIAL_CONFIG).is_file():
        print(f"error: {root} is not a checkout of the official code (no {OFFICIAL_CONFIG})", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    sizes = image_sizes([tuple(s) for s in (args.image_size or [(800, 1216)])], args.num_images)
    images = random_images(sizes, args.seed)

    with tempfile.TemporaryDirectory(prefix="recursivedet_side_by_side_") as tmp:
        work = Path(tmp)
        torch.save(images, work / "images.pth")
        official_process = WorkerProcess(args, work, "official")
        try:
            state, official = official_process.outputs()
            if detect_official_architecture(state) != args.arch:
                print(f"error: the official checkpoint is not {args.arch}", file=sys.stderr)
                return 2
            dense_roi_pe = args.dense_roi_pe or (args.dtype == "float64" and args.arch == "recursivedet")
            converted = convert_official_state_dict(state)
            model = build_project_model(args.arch, args.proposals, converted, args.dtype, dense_roi_pe)
            ours = run_project_model(model, images)
            timing, parts = None, {}
            if args.timing_runs > 0:
                load_before = _load_average()
                parts = project_timing_parts(model, images[0])
                timing = interleaved_timing(
                    list(parts), lambda part: _sample(parts[part]), official_process.sample, args.timing_runs
                )
                timing["load_average"] = [load_before, _load_average()]
        finally:
            official_process.close()
        if timing is not None:
            h, w = sizes[0]
            timing["head_gflops"] = flops_by_module(model, h, w)["decoder"]
            timing["matmul_peak"] = matmul_peak_gflops(torch.device("cpu"))
        training = None
        if args.train_runs > 0 and args.dtype == "float32":
            del model, parts  # not needed by the training workers: leave the machine's memory to them
            training = compare_training(args, work, converted)

    report = {
        "arch": args.arch,
        "proposals": args.proposals,
        "seed": args.seed,
        "dtype": args.dtype,
        "roi_pe": ("dense" if dense_roi_pe else "config default") if args.arch == "recursivedet" else "none",
        "score_tol": args.score_tol,
        "box_tol": args.box_tol,
        "images": [],
    }
    agree = True
    for (h, w), a, b in zip(sizes, ours, official["results"], strict=True):
        a["stage_pixel_boxes"] = to_pixel_xyxy(a["stage_boxes"], "cxcywh_normalised", h, w)
        b["stage_pixel_boxes"] = to_pixel_xyxy(b["stage_boxes"], official["box_format"], h, w)
        image = compare_image(a, b, h, w)
        report["images"].append(image)
        worst_score = max([s["max_abs_score_diff"] for s in image["stages"]] + [image["final"]["max_abs_score_diff"]])
        worst_box = max([s["max_abs_box_diff_px"] for s in image["stages"]] + [image["final"]["max_abs_box_diff_px"]])
        agree &= worst_score <= args.score_tol and worst_box <= args.box_tol * max(h, w)
        agree &= image["final"]["only_in_one"] == 0 or image["final"]["only_in_one_max_gap_to_cut"] <= args.score_tol
    report["agree"] = bool(agree)
    if timing is not None:
        report["timing"] = {
            "threads": args.threads,
            "runs": args.timing_runs,
            **timing,
            "ratio": {
                part: {k: timing["ours"][part][k] / timing["official"][part][k] for k in ("wall", "wall_min", "cpu")}
                for part in ("head", "model")
            },
        }
        peak = timing["matmul_peak"]["best"]
        report["timing"]["head_gflop_per_s"] = {
            side: timing["head_gflops"] / timing[side]["head"]["wall"] for side in ("ours", "official")
        }
        report["timing"]["head_fraction_of_peak"] = {
            side: v / peak for side, v in report["timing"]["head_gflop_per_s"].items()
        }
    if training is not None:
        training["ratio"] = {
            "step_wall": training["timing"]["ours"]["wall"] / training["timing"]["official"]["wall"],
            "peak_memory": training["memory"]["ours"]["peak_mb"] / training["memory"]["official"]["peak_mb"],
        }
        training["agree"] = training["loss_rel_diff"] <= args.loss_tol
        report["training"] = training
        report["agree"] = bool(agree and training["agree"])
    _print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main())
