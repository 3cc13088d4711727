"""DiffusionDet's one-to-many matcher (official ``HungarianMatcherDynamicK``): SimOTA-like dynamic-k
assignment, per image.

Cost of prediction i for ground truth j (normalised boxes; every term is invariant to scaling x and y, so it
equals the official cost on absolute boxes):
    5 L1(xyxy) + 2 (focal_pos - focal_neg) - 2 GIoU + 100 [centre of i not inside box j and its centre region]
plus 10000 for a prediction whose centre is inside no box and no centre region. The centre region of j is its
centre +- 2.5 x its width and height. Each j takes its k_j cheapest predictions with
k_j = max(1, int(sum of its top-5 IoUs)); a prediction taken by several goes to its cheapest ground truth of
all; a ground truth left without a prediction then takes its cheapest free one.
"""

import torch
from torch import nn
from torchvision.ops import box_iou, generalized_box_iou

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.box_utils import cxcywh_to_xyxy


def centre_priors(boxes: torch.Tensor, gt_boxes: torch.Tensor, radius: float = 2.5):
    """Where the centres of (N, 4) predicted boxes lie relative to (G, 4) ground-truth boxes (normalised cxcywh).

    Returns:
        in_any (N,): inside some box or some centre region; in_both (N, G): inside box j and its centre region.
    """
    cx, cy = boxes[:, 0:1], boxes[:, 1:2]
    x1, y1, x2, y2 = cxcywh_to_xyxy(gt_boxes).unbind(-1)
    in_box = (cx > x1) & (cx < x2) & (cy > y1) & (cy < y2)
    gx, gy, gw, gh = gt_boxes.unbind(-1)
    in_centre = (cx > gx - radius * gw) & (cx < gx + radius * gw) & (cy > gy - radius * gh) & (cy < gy + radius * gh)
    return in_box.any(1) | in_centre.any(1), in_box & in_centre


def dynamic_k_assignment(cost: torch.Tensor, ks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-to-many assignment of an (N, G) cost matrix with k_j predictions per ground truth j.

    Each j takes its min(k_j, N) cheapest predictions; a prediction taken more than once goes to its cheapest
    ground truth over all of them (the official code's rule: the argmin over every column); then each ground
    truth left without a prediction, in index order, takes its cheapest prediction not yet assigned. The
    official code refills all such columns at once and, when two pick the same prediction, resolves it with a
    stale mask, so one of them ends unmatched; here each gets its own while free predictions remain (with more
    ground truth than predictions some stay unmatched).

    Returns:
        (prediction indices, ground-truth indices), int64, sorted by prediction.
    """
    n, g = cost.shape
    matching = torch.zeros(n, g, dtype=torch.bool, device=cost.device)
    for j in range(g):
        matching[cost[:, j].topk(min(int(ks[j]), n), largest=False).indices, j] = True
    multiple = matching.sum(1) > 1
    if multiple.any():
        cheapest = cost[multiple].argmin(1)
        matching[multiple] = False
        matching[multiple.nonzero()[:, 0], cheapest] = True
    free = ~matching.any(1)
    for j in (~matching.any(0)).nonzero()[:, 0].tolist():
        if not free.any():
            break
        i = int(cost[:, j].masked_fill(~free, float("inf")).argmin())
        matching[i, j] = True
        free[i] = False
    queries = matching.any(1).nonzero()[:, 0]
    return queries, matching[queries].int().argmax(1)


class DynamicKMatcher(nn.Module):
    """SimOTA-like dynamic-k matching (see the module docstring).

    Args:
        class_weight, l1_weight, giou_weight: cost weights (2, 5, 2; equal to the loss weights).
        focal_alpha, focal_gamma: of the focal classification cost (0.25, 2).
        center_radius: centre region in units of the ground truth's size (2.5).
        candidate_k: top IoUs summed to give k (official OTA_K 5).
        outside_center_cost: added where the centre is not inside box j and its region (100).
        outside_cost: added for a prediction whose centre is inside no box or region (10000).
    """

    def __init__(
        self,
        class_weight: float = 2.0,
        l1_weight: float = 5.0,
        giou_weight: float = 2.0,
        focal_alpha: float = 0.25,
        focal_gamma: float = 2.0,
        center_radius: float = 2.5,
        candidate_k: int = 5,
        outside_center_cost: float = 100.0,
        outside_cost: float = 10000.0,
    ):
        super().__init__()
        if class_weight == 0 and l1_weight == 0 and giou_weight == 0:
            raise ConfigValueError("all matching cost weights are 0")
        if candidate_k < 1:
            raise ConfigValueError(f"candidate_k must be at least 1, got {candidate_k}")
        self.class_weight, self.l1_weight, self.giou_weight = class_weight, l1_weight, giou_weight
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.center_radius = center_radius
        self.candidate_k = candidate_k
        self.outside_center_cost = outside_center_cost
        self.outside_cost = outside_cost

    @torch.no_grad()
    def cost_matrix(self, logits, boxes, gt_labels, gt_boxes) -> torch.Tensor:
        """(N, K) logits and (N, 4) boxes of one image vs (G,) labels and (G, 4) boxes -> (N, G) cost."""
        prob = logits.float().sigmoid()[:, gt_labels]
        alpha, gamma = self.focal_alpha, self.focal_gamma
        neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
        pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
        pred, gt = cxcywh_to_xyxy(boxes.float()), cxcywh_to_xyxy(gt_boxes.float())
        cost = self.class_weight * (pos - neg) + self.l1_weight * torch.cdist(pred, gt, p=1)
        cost = cost - self.giou_weight * generalized_box_iou(pred, gt)
        in_any, in_both = centre_priors(boxes.float(), gt_boxes.float(), self.center_radius)
        cost = cost + self.outside_center_cost * (~in_both) + self.outside_cost * (~in_any)[:, None]
        # A diverged model (non-finite predictions) still gets an assignment, so its losses report it.
        return torch.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8)

    @torch.no_grad()
    def forward(self, logits, boxes, targets) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match each image's predictions to its targets.

        Args:
            logits: (B, N, K); boxes: (B, N, 4) normalised cxcywh.
            targets: list of B dicts with "labels" (G_i,) and "boxes" (G_i, 4) normalised cxcywh.
        Returns:
            list of B pairs (prediction indices, ground-truth indices), int64 on CPU; a prediction appears at
            most once, a ground truth once or more.
        """
        indices = []
        for i, target in enumerate(targets):
            if len(target["labels"]) == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty))
                continue
            cost = self.cost_matrix(logits[i], boxes[i], target["labels"], target["boxes"])
            ious = box_iou(cxcywh_to_xyxy(boxes[i].float()), cxcywh_to_xyxy(target["boxes"].float()))
            ious = torch.nan_to_num(ious, nan=0.0)
            top = ious.topk(min(self.candidate_k, len(ious)), dim=0).values
            ks = top.sum(0).int().clamp(min=1)
            queries, gts = dynamic_k_assignment(cost.cpu(), ks.cpu())
            indices.append((queries, gts))
        return indices
