"""Hungarian matching of predictions to ground truth (Sparse R-CNN / DETR set prediction)."""

import torch
from scipy.optimize import linear_sum_assignment
from torch import nn
from torchvision.ops import generalized_box_iou

from recursivedet.errors import ConfigValueError

from .box_utils import cxcywh_to_xyxy

L1_BOX_FORMATS = ("cxcywh", "xyxy")


def l1_coordinates(boxes: torch.Tensor, box_format: str) -> torch.Tensor:
    """Normalised cxcywh boxes in the coordinates the L1 cost and loss compare: the official RecursiveDet code
    compares (cx, cy, w, h), the official Sparse R-CNN code (x1, y1, x2, y2), both normalised by image size."""
    return boxes if box_format == "cxcywh" else cxcywh_to_xyxy(boxes)


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising cost = w_cls * focal + w_l1 * L1 + w_giou * (-GIoU).

    The classification cost is the focal-loss difference between labelling a prediction positive and
    negative for the target class (official code). Costs of all images are computed in one batched
    pass; only the assignment itself runs per image (scipy). ``l1_box_format``: see :func:`l1_coordinates`.
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        l1_box_format: str = "cxcywh",
    ):
        super().__init__()
        if class_weight == 0 and l1_weight == 0 and giou_weight == 0:
            raise ConfigValueError("all matching cost weights are 0")
        if l1_box_format not in L1_BOX_FORMATS:
            raise ConfigValueError(f"l1_box_format must be one of {L1_BOX_FORMATS}, got {l1_box_format!r}")
        self.l1_box_format = l1_box_format
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @torch.no_grad()
    def cost_matrix(self, logits, boxes, gt_labels, gt_boxes):
        """(B, N, K) logits, (B, N, 4) boxes vs concatenated (G,) labels, (G, 4) boxes -> (B, N, G)."""
        b, n, _ = logits.shape
        prob = logits.flatten(0, 1).float().sigmoid()
        out_boxes = boxes.flatten(0, 1).float()
        alpha, gamma = self.focal_alpha, self.focal_gamma
        prob_t = prob[:, gt_labels]
        neg = (1 - alpha) * prob_t**gamma * -(1 - prob_t + 1e-8).log()
        pos = alpha * (1 - prob_t) ** gamma * -(prob_t + 1e-8).log()
        cost = self.class_weight * (pos - neg)
        l1_out, l1_gt = (l1_coordinates(x, self.l1_box_format) for x in (out_boxes, gt_boxes.float()))
        cost += self.l1_weight * torch.cdist(l1_out, l1_gt, p=1)
        cost -= self.giou_weight * generalized_box_iou(cxcywh_to_xyxy(out_boxes), cxcywh_to_xyxy(gt_boxes.float()))
        return cost.view(b, n, -1)

    @torch.no_grad()
    def forward(self, logits, boxes, targets):
        """Match each image's predictions to its targets.

        Args:
            logits: (B, N, K); boxes: (B, N, 4) normalised cxcywh.
            targets: list of B dicts with "labels" (G_i,) and "boxes" (G_i, 4) normalised cxcywh.
        Returns:
            list of B pairs (prediction indices, target indices), each (min(N, G_i),) int64 on CPU.
        """
        sizes = [len(t["labels"]) for t in targets]
        empty = torch.empty(0, dtype=torch.int64)
        if sum(sizes) == 0:
            return [(empty, empty) for _ in targets]
        gt_labels = torch.cat([t["labels"] for t in targets])
        gt_boxes = torch.cat([t["boxes"] for t in targets])
        cost = self.cost_matrix(logits, boxes, gt_labels, gt_boxes).cpu()
        # A diverged model (NaN/inf predictions) still gets an assignment, so that its losses come out
        # non-finite and training stops naming them, instead of scipy failing on "invalid numeric entries".
        cost = torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)
        indices = []
        for i, c in enumerate(cost.split(sizes, dim=-1)):
            rows, cols = linear_sum_assignment(c[i].numpy())
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
