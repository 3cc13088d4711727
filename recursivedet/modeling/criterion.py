"""Set-prediction losses: sigmoid focal + L1 + GIoU on Hungarian-matched pairs (paper Sec. 3.1)."""

import torch
from detectron2.utils import comm
from torch import nn
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from recursivedet.errors import ConfigValueError

from .box_utils import cxcywh_to_xyxy
from .matcher import L1_BOX_FORMATS, HungarianMatcher, l1_coordinates


class SetCriterion(nn.Module):
    """L = w_cls * focal + w_l1 * L1 + w_giou * GIoU, each summed over matched pairs and divided by the
    number of ground-truth boxes averaged across workers (at least 1).

    The classification loss covers all proposals: unmatched ones (and every proposal of an image with no
    object) are trained as negatives for every class. ``l1_box_format``: the coordinates of the L1 loss and
    cost, "cxcywh" (official RecursiveDet) or "xyxy" (official Sparse R-CNN), see
    :func:`~recursivedet.modeling.matcher.l1_coordinates`.
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        matcher: HungarianMatcher | None = None,
        l1_box_format: str = "cxcywh",
    ):
        super().__init__()
        # The paper's matching cost equals the loss: without a matcher, one with the same weights (the configs
        # give the matcher as a node whose weights point at these).
        self.matcher = matcher or HungarianMatcher(
            class_weight, l1_weight, giou_weight, focal_alpha, focal_gamma, l1_box_format
        )
        if l1_box_format not in L1_BOX_FORMATS:
            raise ConfigValueError(f"l1_box_format must be one of {L1_BOX_FORMATS}, got {l1_box_format!r}")
        self.l1_box_format = l1_box_format
        self.class_weight = class_weight
        self.l1_weight = l1_weight
        self.giou_weight = giou_weight
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma

    @staticmethod
    def num_boxes(targets, device) -> float:
        """Ground-truth boxes per worker, averaged over workers, at least 1."""
        count = torch.as_tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(count)
        return max(count.item() / comm.get_world_size(), 1.0)

    def forward(self, logits, boxes, targets, num_boxes: float | None = None):
        """Weighted losses of one set of predictions.

        Args:
            logits: (B, N, K); boxes: (B, N, 4) normalised cxcywh.
            targets: list of B dicts with "labels" (G_i,) and "boxes" (G_i, 4) normalised cxcywh.
            num_boxes: :meth:`num_boxes` of the batch (None: of these targets), computed once for all stages.
        Returns:
            dict with weighted "loss_cls", "loss_bbox" (L1) and "loss_giou".
        """
        indices = self.matcher(logits, boxes, targets)
        device = logits.device
        batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
        src_idx = torch.cat([src for src, _ in indices]).to(device)
        matched_labels = torch.cat(
            [t["labels"][tgt.to(t["labels"].device)] for t, (_, tgt) in zip(targets, indices, strict=True)]
        )
        gt_boxes = torch.cat(
            [t["boxes"][tgt.to(t["boxes"].device)] for t, (_, tgt) in zip(targets, indices, strict=True)]
        )
        if num_boxes is None:
            num_boxes = self.num_boxes(targets, device)
        normaliser = self.normaliser(len(src_idx), num_boxes)

        onehot = torch.zeros_like(logits)
        onehot[batch_idx, src_idx, matched_labels.to(device)] = 1
        loss_cls = sigmoid_focal_loss(logits, onehot, alpha=self.focal_alpha, gamma=self.focal_gamma, reduction="sum")

        loss_l1, loss_giou = self.box_losses(boxes[batch_idx, src_idx], gt_boxes.to(device))
        if not len(src_idx):  # no pair: a zero that keeps every prediction in the graph
            loss_giou = boxes.sum() * 0
        return {
            "loss_cls": self.class_weight * loss_cls / normaliser,
            "loss_bbox": self.l1_weight * loss_l1 / normaliser,
            "loss_giou": self.giou_weight * loss_giou / normaliser,
        }

    def box_losses(self, boxes: torch.Tensor, gt_boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed L1 and GIoU losses of (M, 4) matched normalised cxcywh boxes and their (M, 4) targets."""
        loss_l1 = (l1_coordinates(boxes, self.l1_box_format) - l1_coordinates(gt_boxes, self.l1_box_format)).abs()
        loss_l1 = loss_l1.sum()  # before the GIoU: autograd adds the two gradients in the order they were made
        if not len(boxes):
            return loss_l1, None
        return loss_l1, generalized_box_iou_loss(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(gt_boxes), reduction="sum")

    def normaliser(self, num_pairs: int, num_boxes: float | None) -> float:
        """What each summed loss is divided by: the GT boxes averaged over workers (:meth:`num_boxes`)."""
        return num_boxes
