"""Every decoder stage of a trained model evaluated on its own, in one pass over the test data.

- COCO AP of the detections of each stage (paper Fig. 4: AP against the number of stages run at inference, up to
  more stages than trained for a shared decoder; REGO Appendix Table 4: the decoder's last stage is the model
  without REGO at inference);
- the IoU of each stage's correct detections (REGO Fig. 4): a detection scoring at least ``score_threshold`` is
  correct when it has the ground truth's class and an IoU above 0.5 with a ground truth not yet taken by a
  higher-scoring detection (greedy, in score order, as COCO's matching at IoU 0.5).

Stage t's output does not depend on later stages, so one run of ``max_stages`` stages gives every depth.
"""

import logging

import torch
from detectron2.data import DatasetCatalog
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling import detector_postprocess
from detectron2.structures import Boxes, BoxMode, pairwise_iou

__all__ = ["IOU_BINS", "correct_detection_ious", "evaluate_stages"]

# Histogram bins of REGO Fig. 4: (0.5, 0.6], ..., (0.9, 1.0].
IOU_BINS = (0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _ground_truth(dataset_name: str) -> dict:
    """image_id -> (boxes (G, 4) XYXY pixels, classes (G,)), crowd boxes left out."""
    truth = {}
    for record in DatasetCatalog.get(dataset_name):
        annotations = [a for a in record.get("annotations", []) if not a.get("iscrowd", 0)]
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in annotations]
        truth[record["image_id"]] = (
            torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            torch.tensor([a["category_id"] for a in annotations], dtype=torch.long),
        )
    return truth


def correct_detection_ious(
    boxes: torch.Tensor, scores: torch.Tensor, classes: torch.Tensor, gt_boxes: torch.Tensor, gt_classes: torch.Tensor
) -> list[float]:
    """IoUs of the correct detections of one image (see the module docstring; threshold applied by the caller).

    Args:
        boxes: (D, 4) XYXY; scores, classes: (D,); gt_boxes: (G, 4) XYXY; gt_classes: (G,).
    """
    if len(boxes) == 0 or len(gt_boxes) == 0:
        return []
    iou = pairwise_iou(Boxes(boxes), Boxes(gt_boxes))
    iou[classes[:, None] != gt_classes[None, :]] = 0
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    ious = []
    for d in scores.argsort(descending=True).tolist():
        candidates = iou[d].masked_fill(taken, 0)
        best, g = candidates.max(0)
        if best > 0.5:
            taken[g] = True
            ious.append(float(best))
    return ious


def _histogram(ious: list[float]) -> list[int]:
    counts = torch.histogram(torch.tensor(ious, dtype=torch.float32), torch.tensor(IOU_BINS)).hist
    return [int(c) for c in counts] if ious else [0] * (len(IOU_BINS) - 1)


@torch.no_grad()
def evaluate_stages(model, data_loader, dataset_name: str, max_stages: int, score_threshold: float = 0.3) -> dict:
    """Evaluate each stage of ``model`` (a detector with ``stage_outputs`` and ``inference``, e.g.
    :class:`~recursivedet.modeling.RecursiveDet`) on ``data_loader`` of the registered ``dataset_name``.

    Returns:
        ``{label: {"AP", "AP50", "AP75", "APs", "APm", "APl", "correct": n, "mean_iou": m,
        "iou_histogram": counts over IOU_BINS}}`` for labels "stage 1".."stage max_stages" and "rego k".
    """
    truth = _ground_truth(dataset_name)
    evaluators, ious = {}, {}
    was_training = model.training
    model.eval()
    try:
        for inputs in data_loader:
            images = model.preprocess_image(inputs)
            for label, (logits, boxes) in model.stage_outputs(images, max_stages).items():
                results = model.inference(logits, boxes, images.image_sizes)
                outputs = [
                    {"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1])).to("cpu")}
                    for r, x, s in zip(results, inputs, images.image_sizes, strict=True)
                ]
                if label not in evaluators:
                    evaluators[label] = COCOEvaluator(dataset_name, tasks=("bbox",), distributed=False)
                    evaluators[label].reset()
                    ious[label] = []
                evaluators[label].process(inputs, outputs)
                for x, out in zip(inputs, outputs, strict=True):
                    inst = out["instances"]
                    keep = inst.scores >= score_threshold
                    ious[label] += correct_detection_ious(
                        inst.pred_boxes.tensor[keep], inst.scores[keep], inst.pred_classes[keep], *truth[x["image_id"]]
                    )
    finally:
        model.train(was_training)
    results = {}
    coco_logger = logging.getLogger("detectron2.evaluation.coco_evaluation")
    level = coco_logger.level
    coco_logger.setLevel(logging.WARNING)  # one AP table per stage would flood the log
    try:
        for label, evaluator in evaluators.items():
            metrics = dict(evaluator.evaluate().get("bbox", {}))
            metrics = {k: v for k, v in metrics.items() if k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
            values = ious[label]
            metrics.update(
                correct=len(values),
                mean_iou=sum(values) / len(values) if values else float("nan"),
                iou_histogram=_histogram(values),
            )
            results[label] = metrics
    finally:
        coco_logger.setLevel(level)
    return results
