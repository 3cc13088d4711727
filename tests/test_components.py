"""Building blocks against their equations, the official formulation, brute force and torchvision."""

import itertools
import math
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from torch import nn
from torchvision.ops import generalized_box_iou, sigmoid_focal_loss

from recursivedet.modeling.box_utils import cxcywh_to_xyxy
from recursivedet.modeling.criterion import SetCriterion
from recursivedet.modeling.dynamic_conv import DynamicConv
from recursivedet.modeling.matcher import HungarianMatcher
from recursivedet.modeling.position_encoding import CenternessMask, ImageSinePE, box_sine_embedding, centerness_grid
from recursivedet.modeling.self_attention import ProposalSelfAttention

CONFIGS = Path(__file__).resolve().parents[1] / "projects" / "SparseRCNN" / "configs"


def _sinusoid(value: float, num_feats: int) -> torch.Tensor:
    """Reference: sin on even, cos on odd frequency index i, of value * 2pi / 10000^(2 floor(i/2) / F)."""
    out = []
    for i in range(num_feats):
        angle = value * 2 * math.pi / 10000 ** (2 * (i // 2) / num_feats)
        out.append(math.sin(angle) if i % 2 == 0 else math.cos(angle))
    return torch.tensor(out)


def test_box_sine_embedding_is_y_x_w_h_sinusoids():
    box = torch.tensor([0.3, 0.6, 0.2, 0.5])  # cx, cy, w, h
    emb = box_sine_embedding(box[None], 16)[0]
    assert emb.shape == (64,)
    expected = torch.cat([_sinusoid(v, 16) for v in (0.6, 0.3, 0.2, 0.5)])
    torch.testing.assert_close(emb, expected)


def test_image_sine_pe_matches_detr_normalised_embedding():
    pe = ImageSinePE(8)(torch.zeros(1, 3, 5, 7))
    assert pe.shape == (1, 16, 5, 7)
    for i, j in [(0, 0), (4, 6), (2, 3)]:
        y = (i + 1) / (5 + 1e-6)
        x = (j + 1) / (7 + 1e-6)
        expected = torch.cat([_sinusoid(y, 8), _sinusoid(x, 8)])
        torch.testing.assert_close(pe[0, :, i, j], expected, rtol=1e-5, atol=1e-5)


def test_image_sine_pe_per_image_extent():
    feature = torch.zeros(2, 1, 6, 8)
    pe = ImageSinePE(4)(feature, torch.tensor([[6.0, 8.0], [3.0, 4.0]]))
    torch.testing.assert_close(pe[0], ImageSinePE(4)(torch.zeros(1, 1, 6, 8))[0])
    torch.testing.assert_close(pe[1, :, :3, :4], ImageSinePE(4)(torch.zeros(1, 1, 3, 4))[0])


def test_centerness_follows_official_bin_centres():
    m = centerness_grid(7)
    c = torch.arange(7) + 0.5
    ratio = torch.minimum(c, 7 - c) / torch.maximum(c, 7 - c)
    torch.testing.assert_close(m, torch.sqrt(ratio[:, None] * ratio[None, :]))
    assert m[3, 3] == 1 and m.min() > 0  # Eq. 6 as printed would give exact zeros on the border
    torch.testing.assert_close(m, m.T)
    torch.testing.assert_close(m, m.flip(0))


def test_centerness_adjust_starts_static_and_moves_the_peak():
    static = centerness_grid(7)
    torch.testing.assert_close(centerness_grid(7, torch.zeros(1, 2))[0], static)
    shifted = centerness_grid(7, torch.tensor([[0.6, -0.6]]))[0]  # p_x > 0, p_y < 0
    row, col = divmod(int(shifted.argmax()), 7)
    assert col > 3 and row < 3
    assert shifted.max() <= 1 and shifted.min() > 0
    module = CenternessMask("adjust", 7, 16)
    torch.testing.assert_close(module(torch.randn(4, 16)), static.flatten()[None].expand(4, -1))


def test_centerness_learnable_is_a_parameter_initialised_from_eq6():
    module = CenternessMask("learnable", 7, 16)
    assert isinstance(module.mask, nn.Parameter)
    torch.testing.assert_close(module.mask.detach(), centerness_grid(7))
    assert dict(CenternessMask("static", 7, 16).named_parameters()) == {}


def test_dynamic_conv_box_pe_equals_per_element_projection():
    """The official form's per-box projection shortcut equals the official projection of every RoI element."""
    torch.manual_seed(0)
    dim, m, s = 16, 5, 49
    conv = DynamicConv(dim, 4, 7, box_pe=True, centerness=CenternessMask("static", 7, dim), pe_form="official")
    q = torch.randn(m, dim)
    roi = torch.randn(m, s, dim)
    roi_pos = torch.randn(m, s, dim)
    boxes = torch.rand(m, 4) * 0.5 + 0.1
    sine = box_sine_embedding(boxes, dim // 2)
    out = conv(q, roi, roi_pos, sine, boxes)

    mask = centerness_grid(7).flatten()[None, :, None]
    pos_k = conv.kernel_pos_proj(conv.position_kernel(q, sine, boxes)[:, None, :] * mask)  # (m, s, c)
    pos_f = conv.roi_pos_proj(roi_pos * mask)
    params = conv.dynamic_layer(q)
    k1 = params[:, : dim * 4].view(m, dim, 4)
    k2 = params[:, dim * 4 :].view(m, 4, dim)
    x = torch.bmm(roi, k1) + (pos_f * pos_k).sum(-1, keepdim=True)
    x = torch.relu(conv.norm2(torch.bmm(torch.relu(conv.norm1(x)), k2)))
    expected = torch.relu(conv.norm3(conv.out_layer(x.flatten(1))))
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("centerness", [None, "static", "adjust"])
def test_per_channel_box_pe_equals_its_equation_per_element(centerness):
    """The per-channel form: x_s = f_s k + (p_f,s * p_k,s) W^T with the official per-element projections
    of the masked PEs, written out per element in float64 (W and the adjust offsets random)."""
    torch.manual_seed(0)
    dim, d, m, s = 16, 4, 5, 49
    with torch.no_grad():
        mask_module = CenternessMask(centerness, 7, dim) if centerness else None
        conv = DynamicConv(dim, d, 7, box_pe=True, centerness=mask_module).double()
        conv.position_channels.normal_()
        if centerness == "adjust":
            conv.centerness.center_offset.weight.normal_()
    q = torch.randn(m, dim, dtype=torch.float64)
    roi = torch.randn(m, s, dim, dtype=torch.float64)
    roi_pos = torch.randn(m, s, dim, dtype=torch.float64)
    boxes = torch.rand(m, 4, dtype=torch.float64) * 0.5 + 0.1
    sine = box_sine_embedding(boxes, dim // 2)
    out = conv(q, roi, conv.project_roi_position(roi_pos), sine, boxes)

    mask = conv.centerness(q)[..., None] if centerness else torch.ones(1, s, 1, dtype=torch.float64)
    pos_k = conv.kernel_pos_proj(conv.position_kernel(q, sine, boxes)[:, None, :] * mask)  # (m, s, c)
    pos_f = conv.roi_pos_proj(roi_pos * mask)
    params = conv.dynamic_layer(q)
    k1 = params[:, : dim * d].view(m, dim, d)
    k2 = params[:, dim * d :].view(m, d, dim)
    x = torch.bmm(roi, k1) + (pos_f * pos_k) @ conv.position_channels.T
    x = torch.relu(conv.norm2(torch.bmm(torch.relu(conv.norm1(x)), k2)))
    expected = torch.relu(conv.norm3(conv.out_layer(x.flatten(1))))
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)


def test_position_kernel_scales_x_by_w_ref_over_w_and_y_by_h_ref_over_h():
    torch.manual_seed(0)
    conv = DynamicConv(8, 2, 7, box_pe=True)
    q = torch.randn(1, 8)
    small = torch.tensor([[0.5, 0.5, 0.1, 0.2]])
    large = torch.tensor([[0.5, 0.5, 0.2, 0.8]])
    sine = box_sine_embedding(small, 4)  # same centre: same sinusoid of (y, x)
    ratio = conv.position_kernel(q, sine, small) / conv.position_kernel(q, sine, large)
    torch.testing.assert_close(ratio[0, :4], torch.full((4,), 4.0))  # y half: h_ref / h
    torch.testing.assert_close(ratio[0, 4:], torch.full((4,), 2.0))  # x half: w_ref / w


def test_self_attention_without_pe_equals_torch_multihead_attention():
    torch.manual_seed(0)
    ours = ProposalSelfAttention(16, 4)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(
            torch.cat([ours.q_content_proj.weight, ours.k_content_proj.weight, ours.v_proj.weight])
        )
        ref.in_proj_bias.copy_(torch.cat([ours.q_content_proj.bias, ours.k_content_proj.bias, ours.v_proj.bias]))
        ref.out_proj.load_state_dict(ours.out_proj.state_dict())
    x = torch.randn(2, 7, 16)
    torch.testing.assert_close(ours(x), ref(x, x, x, need_weights=False)[0], rtol=1e-5, atol=1e-5)


def _random_problem(seed, n, g, k=3):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, n, k, generator=gen)
    boxes = torch.rand(1, n, 4, generator=gen) * 0.4 + 0.2
    target = {"labels": torch.randint(0, k, (g,), generator=gen), "boxes": torch.rand(g, 4, generator=gen) * 0.4 + 0.2}
    return logits, boxes, target


@pytest.mark.parametrize("seed,n,g", [(0, 5, 3), (1, 6, 4), (2, 4, 4), (3, 7, 2)])
def test_matcher_equals_brute_force(seed, n, g):
    matcher = HungarianMatcher()
    logits, boxes, target = _random_problem(seed, n, g)
    cost = matcher.cost_matrix(logits, boxes, target["labels"], target["boxes"])[0]
    best = min(itertools.permutations(range(n), g), key=lambda rows: sum(cost[r, j] for j, r in enumerate(rows)))
    ((rows, cols),) = matcher(logits, boxes, [target])
    assert sorted(zip(cols.tolist(), rows.tolist(), strict=True)) == sorted(enumerate(best))


def test_matcher_cost_terms():
    matcher = HungarianMatcher(class_weight=0.0, l1_weight=1.0, giou_weight=0.0)
    logits, boxes, target = _random_problem(0, 3, 2)
    cost = matcher.cost_matrix(logits, boxes, target["labels"], target["boxes"])[0]
    torch.testing.assert_close(cost, torch.cdist(boxes[0], target["boxes"], p=1))
    matcher = HungarianMatcher(class_weight=0.0, l1_weight=0.0, giou_weight=1.0)
    cost = matcher.cost_matrix(logits, boxes, target["labels"], target["boxes"])[0]
    expected = -generalized_box_iou(cxcywh_to_xyxy(boxes[0]), cxcywh_to_xyxy(target["boxes"]))
    torch.testing.assert_close(cost, expected)


def test_l1_coordinates_follow_each_official_code():
    """RecursiveDet's code compares (cx, cy, w, h), Sparse R-CNN's (x1, y1, x2, y2): a box shifted by 0.1 and
    widened by 0.2 costs 0.1 + 0.2 in the first, 0.0 + 0.2 in the second (x1 stays, x2 moves by 0.2)."""
    pred = torch.tensor([[[0.6, 0.5, 0.4, 0.2]]])
    gt = torch.tensor([[0.5, 0.5, 0.2, 0.2]])
    logits = torch.zeros(1, 1, 2)
    expected = {"cxcywh": 0.3, "xyxy": 0.2}
    for box_format, l1 in expected.items():
        matcher = HungarianMatcher(class_weight=0.0, l1_weight=1.0, giou_weight=0.0, l1_box_format=box_format)
        cost = matcher.cost_matrix(logits, pred, torch.tensor([1]), gt)
        criterion = SetCriterion(class_weight=0.0, l1_weight=1.0, giou_weight=0.0, l1_box_format=box_format)
        loss = criterion(logits, pred, [{"labels": torch.tensor([1]), "boxes": gt}], num_boxes=1.0)["loss_bbox"]
        assert cost.item() == pytest.approx(l1) and loss.item() == pytest.approx(l1), box_format
    for arch, box_format in (("sparse_rcnn", "xyxy"), ("recursivedet", "cxcywh")):
        cfg = LazyConfig.load(str(CONFIGS / "models" / f"{arch}.py"))
        assert instantiate(cfg.model.criterion).matcher.l1_box_format == box_format
    with pytest.raises(ValueError, match="l1_box_format"):
        HungarianMatcher(l1_box_format="xywh")


def test_losses_equal_reference_functions():
    torch.manual_seed(0)
    criterion = SetCriterion(class_weight=2.0, l1_weight=5.0, giou_weight=2.0)
    logits = torch.randn(2, 4, 3)
    boxes = torch.rand(2, 4, 4) * 0.4 + 0.2
    targets = [
        {"labels": torch.tensor([2, 0]), "boxes": torch.rand(2, 4) * 0.4 + 0.2},
        {"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)},  # an empty image
    ]
    indices = criterion.matcher(logits, boxes, targets)
    losses = criterion(logits, boxes, targets, num_boxes=2.0)

    rows, cols = indices[0]
    onehot = torch.zeros_like(logits)
    onehot[0, rows, targets[0]["labels"][cols]] = 1
    focal = sigmoid_focal_loss(logits, onehot, alpha=0.25, gamma=2.0, reduction="sum")
    src, tgt = boxes[0, rows], targets[0]["boxes"][cols]
    l1 = (src - tgt).abs().sum()
    giou = (1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tgt)))).sum()
    torch.testing.assert_close(losses["loss_cls"], 2.0 * focal / 2)
    torch.testing.assert_close(losses["loss_bbox"], 5.0 * l1 / 2)
    torch.testing.assert_close(losses["loss_giou"], 2.0 * giou / 2, rtol=1e-5, atol=1e-5)


def test_num_boxes_is_at_least_one():
    empty = [{"labels": torch.zeros(0, dtype=torch.int64)}]
    assert SetCriterion.num_boxes(empty, torch.device("cpu")) == 1.0
    two = [{"labels": torch.tensor([1, 2])}, {"labels": torch.tensor([0])}]
    assert SetCriterion.num_boxes(two, torch.device("cpu")) == 3.0


def test_matcher_assigns_even_when_predictions_are_not_finite():
    logits = torch.zeros(1, 4, 3)
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [float("nan")] * 4, [0.3, 0.3, 0.1, 0.1], [0.7, 0.7, 0.2, 0.2]]])
    logits[0, 1] = float("nan")
    target = {"labels": torch.tensor([0, 1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2], [0.7, 0.7, 0.2, 0.2]])}
    ((rows, cols),) = HungarianMatcher()(logits, boxes, [target])
    # the non-finite proposal costs the most, so the finite ones on the targets are chosen
    assert sorted(zip(rows.tolist(), cols.tolist(), strict=True)) == [(0, 0), (3, 1)]
