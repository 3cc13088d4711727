"""Test-time augmentation: the model on several scales and their horizontal flips, the detections merged by
weighted box fusion or NMS (paper Table 3's TTA row).

Switched on in the config (``dataloader.tta``, see ``configs/common/data/coco.py``) for ``train_net.py
--eval-only`` and ``python -m recursivedet.export``::

    dataloader.tta.enabled=True dataloader.tta.merge=nms "dataloader.tta.min_sizes=[224,256,288]"

Each image of the test mapper is resized with detectron2's ``ResizeShortestEdge`` to every ``min_sizes``
entry (longest edge <= ``max_size``) and, with ``flip``, also mirrored; all versions run as one batch (an
image's detections do not depend on its batch); boxes come back in the original image's coordinates.
"""

import numpy as np
import torch
from detectron2.data import transforms as T
from detectron2.structures import Boxes, Instances
from omegaconf import OmegaConf
from torch import nn
from torchvision.ops import batched_nms, box_iou

from recursivedet.errors import ConfigValueError

MERGES = ("wbf", "nms")


def weighted_boxes_fusion(boxes, scores, labels, num_versions: int, iou_threshold: float = 0.55):
    """Weighted box fusion (Solovyev et al. 2021, 'avg' confidences, equal weights) of detections pooled from
    ``num_versions`` predictions of one image.

    Per class, boxes are taken by decreasing score; each joins the cluster whose fused box it overlaps most
    if that IoU exceeds ``iou_threshold``, else starts a cluster. A fused box is the score-weighted mean of
    its cluster's boxes; its score the mean score times min(cluster size, num_versions) / num_versions, so
    a box that only some versions found counts less.

    Args:
        boxes: (M, 4) x1 y1 x2 y2; scores: (M,); labels: (M,) int.
    Returns:
        fused boxes (C, 4), scores (C,) and labels (C,), by decreasing score.
    """
    out_boxes, out_scores, out_labels = [], [], []
    for label in labels.unique().tolist():
        mask = labels == label
        b, s = boxes[mask].double(), scores[mask].double()
        order = torch.argsort(s, descending=True, stable=True)
        weighted = torch.zeros(0, 4, dtype=b.dtype)  # per cluster: sum of score * box
        totals, counts, fused = [], [], torch.zeros(0, 4, dtype=b.dtype)
        for i in order.tolist():
            box, score = b[i], s[i]
            best = -1
            if len(fused):
                iou = box_iou(box[None], fused)[0]
                j = int(torch.argmax(iou))
                if iou[j] > iou_threshold:
                    best = j
            if best < 0:
                weighted = torch.cat((weighted, (score * box)[None]))
                totals.append(float(score))
                counts.append(1)
                fused = torch.cat((fused, box[None]))
            else:
                weighted[best] += score * box
                totals[best] += float(score)
                counts[best] += 1
                fused[best] = weighted[best] / totals[best]
        for j in range(len(counts)):
            out_boxes.append(fused[j])
            out_scores.append(totals[j] / counts[j] * min(counts[j], num_versions) / num_versions)
            out_labels.append(label)
    if not out_boxes:
        return boxes[:0], scores[:0], labels[:0]
    fused_scores = torch.tensor(out_scores, dtype=scores.dtype)
    order = torch.argsort(fused_scores, descending=True, stable=True)
    fused_boxes = torch.stack(out_boxes).to(boxes.dtype)[order]
    return fused_boxes, fused_scores[order], torch.tensor(out_labels, dtype=labels.dtype)[order]


class TestTimeAugmentation(nn.Module):
    """A detector run on resized and flipped versions of each image, detections merged (see the module).

    Args:
        model: a detector following detectron2's inference convention (``[{"instances": ...}]``).
        min_sizes: shortest-edge sizes of the versions. max_size: longest edge at most.
        flip: also run the horizontally flipped version of each size.
        merge: "wbf" (weighted box fusion) or "nms" (torchvision's class-wise NMS).
        iou_threshold: IoU above which boxes are fused (wbf) or suppressed (nms).
        detections_per_image: detections kept after merging (default: the model's ``detections_per_image``).
    """

    def __init__(
        self,
        model,
        *,
        min_sizes=(800,),
        max_size: int = 1333,
        flip: bool = True,
        merge: str = "wbf",
        iou_threshold: float = 0.55,
        detections_per_image: int | None = None,
    ):
        super().__init__()
        if merge not in MERGES:
            raise ConfigValueError(f"dataloader.tta.merge must be one of {MERGES}, got {merge!r}")
        if not min_sizes or any(int(s) < 1 for s in min_sizes) or int(max_size) < 1:
            raise ConfigValueError(
                f"dataloader.tta.min_sizes must be positive sizes, max_size positive, got {list(min_sizes)} {max_size}"
            )
        if not 0.0 <= iou_threshold <= 1.0:
            raise ConfigValueError(f"dataloader.tta.iou_threshold must be in [0, 1], got {iou_threshold}")
        self.model = model
        self.resizes = [T.ResizeShortestEdge(int(s), int(max_size)) for s in min_sizes]
        self.flip = flip
        self.merge = merge
        self.iou_threshold = iou_threshold
        self.detections_per_image = detections_per_image or getattr(model, "detections_per_image", 100)

    @property
    def num_versions(self) -> int:
        return len(self.resizes) * (2 if self.flip else 1)

    def versions(self, x: dict) -> list[tuple[dict, bool]]:
        """The model's inputs of every version of one mapped image, and whether each is flipped."""
        image = x["image"].permute(1, 2, 0).numpy()
        height, width = x.get("height", image.shape[0]), x.get("width", image.shape[1])
        out = []
        for resize in self.resizes:
            resized = resize.get_transform(image).apply_image(image)
            for flipped in (False, True) if self.flip else (False,):
                array = resized[:, ::-1] if flipped else resized
                tensor = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))
                out.append(({"image": tensor, "height": height, "width": width}, flipped))
        return out

    def merge_detections(self, instances: list[Instances], flipped: list[bool], size) -> Instances:
        """One image's detections from all versions (in original coordinates) merged into one set."""
        width = size[1]
        boxes = []
        for inst, f in zip(instances, flipped, strict=True):
            b = inst.pred_boxes.tensor
            boxes.append(torch.stack((width - b[:, 2], b[:, 1], width - b[:, 0], b[:, 3]), dim=1) if f else b)
        boxes = torch.cat(boxes)
        scores = torch.cat([i.scores for i in instances])
        labels = torch.cat([i.pred_classes for i in instances])
        if self.merge == "nms":
            keep = batched_nms(boxes.float(), scores, labels, self.iou_threshold)[: self.detections_per_image]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        else:
            boxes, scores, labels = weighted_boxes_fusion(
                boxes.cpu(), scores.cpu(), labels.cpu(), self.num_versions, self.iou_threshold
            )
            boxes, scores, labels = (t[: self.detections_per_image] for t in (boxes, scores, labels))
        result = Instances(size)
        result.pred_boxes = Boxes(boxes)
        result.scores = scores
        result.pred_classes = labels
        return result

    def forward(self, batched_inputs: list[dict]):
        if self.model.training:  # the detector's own mode decides (training passes through)
            return self.model(batched_inputs)
        outputs = []
        for x in batched_inputs:
            versions = self.versions(x)
            results = self.model([v for v, _ in versions])
            instances = [r["instances"].to("cpu") for r in results]
            size = (versions[0][0]["height"], versions[0][0]["width"])
            outputs.append({"instances": self.merge_detections(instances, [f for _, f in versions], size)})
        return outputs


def with_tta(cfg, model):
    """``model`` wrapped in :class:`TestTimeAugmentation` when ``dataloader.tta.enabled`` is set, else
    ``model``."""
    settings = OmegaConf.select(cfg, "dataloader.tta", default=None)
    if not settings or not settings.get("enabled", False):
        return model
    options = {k: v for k, v in dict(settings).items() if k != "enabled"}
    unknown = sorted(set(options) - {"min_sizes", "max_size", "flip", "merge", "iou_threshold"})
    if unknown:
        raise ConfigValueError(f"dataloader.tta has unknown settings {unknown}")
    return TestTimeAugmentation(model, **options).eval()
