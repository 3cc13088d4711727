"""This project's DiffusionDet on the test images with the official code's noise, and the outputs of both compared.

Each image (one per batch: the official sampling handles a single image) is sampled by both models with each step
count, every random draw answered from the same tape (:mod:`.random_tape`). Compared per image and step count:
every DDIM step's every stage, as :func:`recursivedet.analysis.output_diff.compare_stages` does (so renewal and the
DDIM updates are checked step by step), and the final detections after the ensemble and NMS, paired one to one by
least cost (class, score, box) since no proposal index survives the ensemble.
"""

import torch
from scipy.optimize import linear_sum_assignment

from recursivedet import model_zoo
from recursivedet.analysis.output_diff import compare_stages, to_pixel_xyxy

MODEL_CONFIG = "DiffusionDet/models/diffusiondet.py"


def build_project_model(proposals: int, state_dict: dict):
    """This project's DiffusionDet (``models/diffusiondet.py``) with ``proposals`` proposals, loaded strictly, with
    the official ensemble (last DDIM step left out) so that both codes merge the same steps."""
    from detectron2.config import instantiate

    cfg = model_zoo.get_config(MODEL_CONFIG)
    cfg.model.num_proposals = proposals
    cfg.model.sampler.ensemble_last_step = False
    model = instantiate(cfg.model)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def run_project_model(model, images: list[torch.Tensor], steps_list, tapes: dict) -> list[dict]:
    """Per image, per step count: the decoder's stage logits (T, N, K) and boxes (T, N, 4) normalised cxcywh of
    each DDIM step, and the final boxes (D, 4) pixel xyxy, scores and classes; the noise from ``tapes[steps][i]``."""
    calls = []
    handle = model.decoder.register_forward_hook(lambda module, inputs, output: calls.append(output))
    results = []
    try:
        with torch.no_grad():
            for i, image in enumerate(images):
                h, w = image.shape[-2:]
                per_steps = {}
                for steps in steps_list:
                    entries = list(tapes[steps][i])
                    model.sampler.steps = steps
                    model.sampler.draw = lambda generators, num, device, dtype, entries=entries: entries.pop(0)[
                        None
                    ].to(device, dtype)
                    calls.clear()
                    (out,) = model([{"image": image, "height": h, "width": w}])
                    if entries:
                        raise RuntimeError(f"the sampling left {len(entries)} noise tensors of the tape unused")
                    inst = out["instances"]
                    per_steps[steps] = {
                        "step_logits": [torch.stack([logits[0] for logits, _ in stages]) for stages in calls],
                        "step_boxes": [torch.stack([boxes[0] for _, boxes in stages]) for stages in calls],
                        "boxes": inst.pred_boxes.tensor.clone(),
                        "scores": inst.scores.clone(),
                        "classes": inst.pred_classes.clone(),
                    }
                results.append(per_steps)
    finally:
        handle.remove()
        del model.sampler.draw  # back to the class's own noise
    return results


def compare_detections(ours: dict, official: dict, h: int, w: int) -> dict:
    """The final detections paired one to one by least cost: a different class costs 1e3, else |score
    difference| + max |box difference| / longer side. Counts, and the largest differences over the pairs."""
    a_boxes, b_boxes = ours["boxes"], official["boxes"]
    cost = (ours["scores"][:, None] - official["scores"][None]).abs()
    cost = cost + (a_boxes[:, None] - b_boxes[None]).abs().amax(-1) / max(h, w)
    cost = cost + 1e3 * (ours["classes"][:, None] != official["classes"][None])
    rows, cols = linear_sum_assignment(cost.double().numpy())
    rows, cols = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
    same_class = ours["classes"][rows] == official["classes"][cols]
    rows, cols = rows[same_class], cols[same_class]
    score_diff = (ours["scores"][rows] - official["scores"][cols]).abs()
    box_diff = (a_boxes[rows] - b_boxes[cols]).abs()
    return {
        "detections_ours": len(a_boxes),
        "detections_official": len(b_boxes),
        "paired": len(rows),
        "only_in_one": len(a_boxes) + len(b_boxes) - 2 * len(rows),
        "max_abs_score_diff": float(score_diff.max()) if len(rows) else 0.0,
        "max_abs_box_diff_px": float(box_diff.max()) if len(rows) else 0.0,
    }


def _stages(result: dict, box_format: str, h: int, w: int) -> dict:
    """Every DDIM step's stages one after the other, boxes in pixels."""
    return {
        "stage_logits": torch.cat(result["step_logits"]),
        "stage_pixel_boxes": to_pixel_xyxy(torch.cat(result["step_boxes"]), box_format, h, w),
    }


def compare_sampling(ours: dict, official: dict, h: int, w: int, threshold: float = 0.5) -> dict:
    """One image at one step count: per DDIM step and stage (``stage`` counts through the steps), the boxes each
    side kept at each renewal, and the final detections."""
    stages = compare_stages(_stages(ours, "cxcywh_normalised", h, w), _stages(official, "xyxy_pixels", h, w))
    kept = {
        side: [int((logits[-1].sigmoid().amax(-1) > threshold).sum()) for logits in result["step_logits"]]
        for side, result in (("ours", ours), ("official", official))
    }
    return {
        "height": h,
        "width": w,
        "steps": len(official["step_logits"]),
        "stages": stages,
        "kept": kept,
        "final": compare_detections(ours, official, h, w),
    }


def sampling_agrees(image: dict, score_tol: float, box_tol: float) -> bool:
    """Every stage of every step and every paired detection within the tolerances (box: x the longer side), the
    same boxes kept at each renewal and no detection without a partner."""
    final = image["final"]
    worst_score = max([s["max_abs_score_diff"] for s in image["stages"]] + [final["max_abs_score_diff"]])
    worst_box = max([s["max_abs_box_diff_px"] for s in image["stages"]] + [final["max_abs_box_diff_px"]])
    size = max(image["height"], image["width"])
    same = image["kept"]["ours"] == image["kept"]["official"] and final["only_in_one"] == 0
    return same and worst_score <= score_tol and worst_box <= box_tol * size
