"""DiffusionDet's losses (official ``SetCriterionDynamicK``): sigmoid focal + L1 + GIoU on the pairs of the
one-to-many :class:`~.matcher.DynamicKMatcher`, each normalised by the number of matched pairs of this
stage on this process (at least 1), as the official code does (it computes a GT count averaged over
processes but uses the matched pairs instead)."""

import torch
from torchvision.ops import generalized_box_iou_loss

from recursivedet.modeling.box_utils import cxcywh_to_xyxy
from recursivedet.modeling.criterion import SetCriterion

from .matcher import DynamicKMatcher


class DynamicKCriterion(SetCriterion):
    """L = w_cls focal + w_l1 L1 + w_giou (1 - GIoU): the library's :class:`SetCriterion` on the pairs of the
    one-to-many matcher, L1 on normalised (x1, y1, x2, y2) (official), normalised by the matched pairs.

    Args:
        matcher: the :class:`DynamicKMatcher` (its cost weights are the configs' loss weights).
        class_weight, l1_weight, giou_weight: 2, 5, 2. focal_alpha, focal_gamma: 0.25, 2.
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
        super().__init__(class_weight, l1_weight, giou_weight, focal_alpha, focal_gamma, matcher, "xyxy")

    @staticmethod
    def num_boxes(targets, device) -> None:
        """Nothing to gather across workers: the normaliser is this stage's matched pairs."""
        return None

    def box_losses(self, boxes: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both losses on the same (x1, y1, x2, y2) boxes, as the official code computes them (the gradients of
        the two then meet before the conversion, which fixes the order in which float rounding adds them up)."""
        boxes, gt_boxes = cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes)
        loss_l1 = (boxes - gt_boxes).abs().sum()
        return loss_l1, generalized_box_iou_loss(boxes, gt_boxes, reduction="sum") if len(boxes) else None

    def normaliser(self, num_pairs: int, num_boxes) -> int:
        return max(num_pairs, 1)
