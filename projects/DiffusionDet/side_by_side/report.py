"""The comparison's report per image and step count, as text (the rest of the report is the library's
``recursivedet.analysis.comparison_report``)."""


def print_sampling(images: list[dict]) -> None:
    """Per image and step count: every DDIM step's stages, the boxes kept at each renewal, the final detections."""
    for image in images:
        _print_image(image)


def _print_image(image: dict) -> None:
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
