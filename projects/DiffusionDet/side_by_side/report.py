"""The comparison's report (the dict of :func:`~.session.compare`) as text and as JSON."""

from recursivedet.analysis.comparison_report import print_timing, print_training, write_report

__all__ = ["print_report", "write_report"]


def _print_sampling(image: dict) -> None:
    h, w, steps = image["height"], image["width"], image["steps"]
    print(f"\nimage 3x{h}x{w}, {steps} DDIM step{'s' if steps > 1 else ''}")
    print("  step  stage  max|d score|  max|d logit|  max|d box| px  max|box| px")
    stages_per_step = len(image["stages"]) // steps
    for s in image["stages"]:
        step, stage = divmod(s["stage"] - 1, stages_per_step)
        print(
            f"  {step + 1:>4}  {stage + 1:>5}  {s['max_abs_score_diff']:11.3e}  {s['max_abs_logit_diff']:11.3e}  "
            f"{s['max_abs_box_diff_px']:13.3e}  {s['max_abs_box_px']:11.1f}"
        )
    kept = image["kept"]
    print(f"  boxes scoring > 0.5 after each step: ours {kept['ours']}, official {kept['official']}")
    f = image["final"]
    print(
        f"  final detections: ours {f['detections_ours']}, official {f['detections_official']}, paired "
        f"{f['paired']}, without a partner {f['only_in_one']}; max|d score| {f['max_abs_score_diff']:.3e}, "
        f"max|d box| {f['max_abs_box_diff_px']:.3e} px"
    )


def print_report(report: dict) -> None:
    """Print the agreement per image and step count, the timing and the training step (those run), then AGREE or
    DISAGREE."""
    print(
        f"diffusiondet: {report['proposals']} proposals, DDIM steps {report['steps']}, seed {report['seed']}, "
        f"float32, tolerances: score {report['score_tol']:g}, box {report['box_tol']:g} x longer side"
    )
    for image in report["images"]:
        _print_sampling(image)
    if report.get("timing"):
        print_timing(report["timing"], report["images"][0]["height"], report["images"][0]["width"])
    if report.get("training"):
        print_training(report["training"])
    print(f"\n{'AGREE' if report['agree'] else 'DISAGREE'}")
