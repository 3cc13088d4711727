"""DiffusionDet's losses (official ``SetCriterionDynamicK``): sigmoid focal + L1 + GIoU on the pairs of the
one-to-many :class:`~.matcher.DynamicKMatcher`, each normalised by the number of matched pairs of this
stage on this process (at least 1), as the official code does (it computes a GT count averaged over
processes but uses the matched pairs instead)."""

import torch
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from recursivedet.modeling.box_utils import cxcywh_to_xyxy

from .matcher import DynamicKMatcher


class DynamicKCriterion(nn.Module):
    """L = w_cls focal + w_l1 L1 + w_giou (1 - GIoU).

    The classification loss covers every prediction (unmatched ones, and all of an image without objects, are
    negatives for every class); L1 compares normalised (x1, y1, x2, y2) (official); GIoU the same boxes.

    Args:
        class_weight, l1_weight, giou_weight: 2, 5, 2. focal_alpha, focal_gamma: 0.25, 2.
        matcher: the :class:`DynamicKMatcher` (its cost weights are the configs' loss weights).
    """

    def __init__(
        self,
        matcher: DynamicKMatcher,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
    ):
        super().__init__()
        self.matcher = matcher
        self.class_weight, self.l1_weight, self.giou_weight = class_weight, l1_weight, giou_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma

    def forward(self, logits, boxes, targets) -> dict[str, torch.Tensor]:
        """Weighted losses of one stage's predictions.

        Args:
            logits: (B, N, K); boxes: (B, N, 4) normalised cxcywh.
            targets: list of B dicts with "labels" (G_i,) and "boxes" (G_i, 4) normalised cxcywh.
        Returns:
            dict with weighted "loss_cls", "loss_bbox" (L1) and "loss_giou".
        """
        indices = self.matcher(logits, boxes, targets)
        device = logits.device
        batch_idx = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)]).to(device)
        query_idx = torch.cat([q for q, _ in indices]).to(device)
        labels = torch.cat([t["labels"][g.to(t["labels"].device)] for t, (_, g) in zip(targets, indices, strict=True)])
        gt_boxes = torch.cat([t["boxes"][g.to(t["boxes"].device)] for t, (_, g) in zip(targets, indices, strict=True)])
        num_pairs = max(len(query_idx), 1)

        onehot = torch.zeros_like(logits)
        onehot[batch_idx, query_idx, labels.to(device)] = 1
        loss_cls = sigmoid_focal_loss(logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum")
        pred = cxcywh_to_xyxy(boxes[batch_idx, query_idx])
        gt = cxcywh_to_xyxy(gt_boxes.to(device))
        loss_l1 = (pred - gt).abs().sum()
        loss_giou = generalized_box_iou_loss(pred, gt, reduction="sum") if len(pred) else boxes.sum() * 0
        return {
            "loss_cls": self.class_weight * loss_cls / num_pairs,
            "loss_bbox": self.l1_weight * loss_l1 / num_pairs,
            "loss_giou": self.giou_weight * loss_giou / num_pairs,
        }
