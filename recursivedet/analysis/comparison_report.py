"""A comparison report (``python -m recursivedet.analysis.compare``) as text, and as JSON."""

import json
from collections.abc import Callable
from pathlib import Path


def print_images(images: list[dict]) -> None:
    """Per image: the per-stage differences and the final detections' (:mod:`~.output_diff`)."""
    for image in images:
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


def print_timing(t: dict, h: int, w: int) -> None:
    """The interleaved timing of each part (median and minimum wall, median CPU) with the ratios, and the head's
    achieved GFLOP/s against a large matmul's."""
    print(f"\ntiming, 3x{h}x{w}, {t['threads']} threads, {t['runs']} runs after one warm-up:")
    before, after = t["load_average"]
    if before is not None:
        print(f"  1-min load average: {before:.2f} before, {after:.2f} after (runs of both interleaved)")
    print("  part   measure        ours ms   official ms   ours/official")
    for part in t["ratio"]:
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


def print_training(tr: dict) -> None:
    """The first training-step losses, the step times and the peak memory of both sides."""
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


def write_report(report: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(report, indent=2) + "\n")


def print_report(report: dict, headline: str, images: Callable[[list[dict]], None] = print_images) -> None:
    """Print ``headline``, the agreement per image (as ``images`` prints it), the timing and the training step
    (those run), then AGREE or DISAGREE."""
    print(headline)
    images(report["images"])
    if report.get("timing"):
        print_timing(report["timing"], report["images"][0]["height"], report["images"][0]["width"])
    if report.get("training"):
        print_training(report["training"])
    print(f"\n{'AGREE' if report['agree'] else 'DISAGREE'}")
