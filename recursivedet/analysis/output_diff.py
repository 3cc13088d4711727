"""Outputs of this project's model and of an official code on the same inputs, compared
(``python -m recursivedet.analysis.compare``): test images, box formats, per-stage differences and final
detections paired whatever their order.

Per stage: max |score difference| over all proposals x classes (sigmoid of the logits) and max |box
difference| in pixels (xyxy), taken from the decoder/head outputs, so the top-k selection plays no part.
Final detections of a top-k over the last stage: each detection is identified by its (proposal, class) from its
own model's last stage, so that the two lists are compared pair by pair whatever their order; selections that
differ (possible only for near-equal scores at the top-k boundary) are counted and reported with their gap to
the cut.
"""

import torch


def image_sizes(given: list[tuple[int, int]], num_images: int) -> list[tuple[int, int]]:
    """``num_images`` sizes: the given ones first, then each one smaller than the last (x0.75 in height,
    x0.74 in width), nudged off multiples of 32 so that padding is exercised."""
    sizes = list(given[:num_images])
    while len(sizes) < num_images:
        h, w = sizes[-1]
        h, w = round(h * 0.75), round(w * 0.74)
        sizes.append(tuple(v - 5 if v % 32 == 0 else v for v in (max(h, 40), max(w, 40))))
    return sizes


def random_images(sizes: list[tuple[int, int]], seed: int) -> list[torch.Tensor]:
    """One seeded random uint8 image (3, h, w) per size."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8) for h, w in sizes]


def to_pixel_xyxy(boxes: torch.Tensor, box_format: str, h: int, w: int) -> torch.Tensor:
    """(..., 4) boxes in ``box_format`` ("xyxy_pixels" or "cxcywh_normalised") -> pixel (x0, y0, x1, y1) for
    an h x w image."""
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


def compare_stages(ours: dict, official: dict) -> list[dict]:
    """Per stage of both results ("stage_logits" (T, N, K), "stage_pixel_boxes" (T, N, 4)): the largest score,
    logit and box differences, and the largest box coordinate."""
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
    return stages


def compare_image(ours: dict, official: dict, h: int, w: int) -> dict:
    """Per-stage and final-detection differences of one image (both results with "stage_pixel_boxes")."""
    stages = compare_stages(ours, official)

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


def image_agrees(image: dict, score_tol: float, box_tol: float) -> bool:
    """Whether one image of :func:`compare_image` agrees: every score within ``score_tol``, every box within
    ``box_tol`` x the longer image side, and differing selections within ``score_tol`` of the top-k cut."""
    final = image["final"]
    worst_score = max([s["max_abs_score_diff"] for s in image["stages"]] + [final["max_abs_score_diff"]])
    worst_box = max([s["max_abs_box_diff_px"] for s in image["stages"]] + [final["max_abs_box_diff_px"]])
    agree = worst_score <= score_tol and worst_box <= box_tol * max(image["height"], image["width"])
    return agree and (final["only_in_one"] == 0 or final["only_in_one_max_gap_to_cut"] <= score_tol)
