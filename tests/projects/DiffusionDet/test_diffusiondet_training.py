"""DiffusionDet training: the cosine schedule and box corruption, the time embedding, the dynamic-k matcher
against an explicit element-by-element reference, the losses, forward/backward on tiny inputs, images without
boxes, more boxes than proposals, and a tiny model that overfits two images."""

import math

import pytest
import torch
from model_factory import make_input, tiny_diffusiondet
from torchvision.ops import box_iou

from recursivedet.projects.DiffusionDet.modeling import (
    BoxDiffusion,
    DynamicKCriterion,
    DynamicKMatcher,
    timestep_sinusoid,
)
from recursivedet.projects.DiffusionDet.modeling.diffusion import cosine_alphas_cumprod, ddim_time_pairs


def test_cosine_schedule():
    abar = cosine_alphas_cumprod(1000)
    f = [math.cos((t / 1000 + 0.008) / 1.008 * math.pi / 2) ** 2 for t in range(1001)]
    # unclipped steps: abar_t = f(t + 1) / f(0); the last beta is clipped at 0.999
    for t in (0, 1, 500, 998):
        assert abar[t].item() == pytest.approx(f[t + 1] / f[0], rel=1e-9)
    assert abar[999].item() == pytest.approx(abar[998].item() * 0.001, rel=1e-9)
    assert (abar[1:] < abar[:-1]).all()


def test_ddim_time_pairs():
    assert ddim_time_pairs(1) == [(999, -1)]
    assert ddim_time_pairs(4) == [(999, 749), (749, 499), (499, 249), (249, -1)]
    assert len(ddim_time_pairs(1000)) == 1000 and ddim_time_pairs(1000)[-1] == (0, -1)


def test_time_sinusoid():
    t = torch.tensor([0, 7, 999])
    emb = timestep_sinusoid(t, 8)
    for b, step in enumerate(t.tolist()):
        for i in range(4):
            w = 10000 ** (-i / 3)
            assert emb[b, i].item() == pytest.approx(math.sin(step * w), abs=1e-4)
            assert emb[b, 4 + i].item() == pytest.approx(math.cos(step * w), abs=1e-4)


def test_padding_of_ground_truth_boxes():
    diffusion = BoxDiffusion()
    torch.manual_seed(0)
    gt = torch.tensor([[0.3, 0.4, 0.2, 0.1], [0.6, 0.6, 0.3, 0.5], [0.5, 0.2, 0.1, 0.1]])
    padded = diffusion.pad_boxes(gt, 500)
    assert padded.shape == (500, 4) and torch.equal(padded[:3], gt)
    assert (padded[3:, 2:] >= 1e-4).all()
    assert padded[3:].mean().item() == pytest.approx(0.5, abs=0.02)  # N(0.5, 1/6)
    assert padded[3:, :2].std().item() == pytest.approx(1 / 6, rel=0.1)
    # more boxes than proposals: a random subset in the boxes' order
    many = torch.rand(9, 4)
    subset = diffusion.pad_boxes(many, 4)
    rows = [next(i for i in range(9) if torch.equal(many[i], s)) for s in subset]
    assert len(rows) == 4 and rows == sorted(set(rows))
    # no box: one box covering the image, then placeholders
    empty = diffusion.pad_boxes(torch.zeros(0, 4), 5)
    assert empty.shape == (5, 4) and empty[0].tolist() == [0.5, 0.5, 1.0, 1.0]


def test_corruption():
    diffusion = BoxDiffusion()
    x0 = torch.tensor([[[0.3, 0.4, 0.2, 0.1], [0.9, 0.1, 0.05, 0.02]]])
    noise = torch.randn(1, 2, 4)
    # t = 0 keeps the boxes (abar_0 = 0.99996)
    assert torch.allclose(diffusion.corrupt(x0, torch.tensor([0]), noise), x0, atol=0.01)
    abar = diffusion.alphas_cumprod[600].item()
    signal = math.sqrt(abar) * (x0 * 2 - 1) * 2 + math.sqrt(1 - abar) * noise
    expected = (signal.clamp(-2, 2) / 2 + 1) / 2
    assert torch.allclose(diffusion.corrupt(x0, torch.tensor([600]), noise), expected, atol=1e-6)
    # the clamp gives boxes with w = 0 and h = 0
    clamped = diffusion.corrupt(x0, torch.tensor([999]), torch.full((1, 2, 4), -5.0))
    assert (clamped == 0).all()


def _sigmoid(x):
    return 1 / (1 + math.exp(-x))


def _xyxy(b):
    return (b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2)


def _iou_giou(a, b):
    ax1, ay1, ax2, ay2 = _xyxy(a)
    bx1, by1, bx2, by2 = _xyxy(b)
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    hull = (max(ax2, bx2) - min(ax1, bx1)) * (max(ay2, by2) - min(ay1, by1))
    return inter / union, inter / union - (hull - union) / hull


def reference_match(logits, boxes, labels, gts):
    """The dynamic-k matching written out element by element from its definition (module docstring)."""
    n, g = len(boxes), len(gts)
    boxes, gts = boxes.double().tolist(), gts.double().tolist()
    cost = [[0.0] * g for _ in range(n)]
    ious = [[0.0] * g for _ in range(n)]
    for i in range(n):
        cx, cy = boxes[i][0], boxes[i][1]
        inside_any = False
        for j in range(g):
            p = _sigmoid(logits[i, labels[j]].item())
            focal = 0.25 * (1 - p) ** 2 * -math.log(p + 1e-8) - 0.75 * p**2 * -math.log(1 - p + 1e-8)
            l1 = sum(abs(u - v) for u, v in zip(_xyxy(boxes[i]), _xyxy(gts[j]), strict=True))
            ious[i][j], giou = _iou_giou(boxes[i], gts[j])
            x1, y1, x2, y2 = _xyxy(gts[j])
            gx, gy, gw, gh = gts[j]
            in_box = x1 < cx < x2 and y1 < cy < y2
            in_centre = gx - 2.5 * gw < cx < gx + 2.5 * gw and gy - 2.5 * gh < cy < gy + 2.5 * gh
            inside_any |= in_box or in_centre
            cost[i][j] = 2 * focal + 5 * l1 - 2 * giou + (0 if in_box and in_centre else 100)
        if not inside_any:
            cost[i] = [c + 10000 for c in cost[i]]
    claims = {}
    for j in range(g):
        k = max(1, int(sum(sorted((ious[i][j] for i in range(n)), reverse=True)[:5])))
        for i in sorted(range(n), key=lambda i, j=j: cost[i][j])[:k]:
            claims.setdefault(i, []).append(j)
    owner = {i: js[0] if len(js) == 1 else min(range(g), key=lambda j, i=i: cost[i][j]) for i, js in claims.items()}
    for j in range(g):
        free = [i for i in range(n) if i not in owner]
        if j not in owner.values() and free:
            owner[min(free, key=lambda i, j=j: cost[i][j])] = j
    return sorted(owner.items())


@pytest.mark.parametrize("seed", range(12))
def test_matcher_equals_the_explicit_reference(seed):
    g = torch.Generator().manual_seed(seed)
    num_gt = 1 + seed % 4
    num = 3 if seed == 11 else 10  # seed 11: more ground truth than predictions
    gts = torch.cat(
        (torch.rand(num_gt, 2, generator=g) * 0.6 + 0.2, torch.rand(num_gt, 2, generator=g) * 0.3 + 0.05), 1
    )
    # predictions: jittered copies of the ground truth (several good candidates, k > 1) and random boxes
    near = gts[torch.arange(num) % num_gt] + torch.randn(num, 4, generator=g) * 0.03
    far = torch.cat((torch.rand(num, 2, generator=g), torch.rand(num, 2, generator=g) * 0.4 + 0.02), 1)
    boxes = torch.where(torch.rand(num, 1, generator=g) < 0.6, near, far).clamp(0.01, 1)
    logits = torch.randn(num, 5, generator=g)
    labels = torch.randint(0, 5, (num_gt,), generator=g)
    queries, matched = DynamicKMatcher()(logits[None], boxes[None], [{"labels": labels, "boxes": gts}])[0]
    assert list(zip(queries.tolist(), matched.tolist(), strict=True)) == reference_match(logits, boxes, labels, gts)
    if num >= num_gt:
        assert set(matched.tolist()) == set(range(num_gt))  # every ground truth gets a prediction


def test_matcher_gives_several_predictions_to_one_object():
    gt = torch.tensor([[0.5, 0.5, 0.4, 0.4]])
    # IoUs 1, 1, 1, ~0.95 and 0: k = int(3.95) = 3, the three exact copies
    boxes = torch.tensor([[0.5, 0.5, 0.4, 0.4]] * 3 + [[0.51, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]])
    queries, matched = DynamicKMatcher()(
        torch.zeros(1, 5, 2), boxes[None], [{"labels": torch.tensor([1]), "boxes": gt}]
    )[0]
    assert queries.tolist() == [0, 1, 2] and matched.tolist() == [0, 0, 0]
    empty = DynamicKMatcher()(
        torch.zeros(1, 5, 2), boxes[None], [{"labels": torch.zeros(0, dtype=torch.int64), "boxes": torch.zeros(0, 4)}]
    )
    assert [len(x) for x in empty[0]] == [0, 0]


def test_losses_on_matched_pairs():
    criterion = DynamicKCriterion(DynamicKMatcher())
    gt = torch.tensor([[0.5, 0.5, 0.4, 0.4]])
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.4], [0.55, 0.5, 0.4, 0.3], [0.1, 0.1, 0.1, 0.1]]])
    logits = torch.tensor([[[2.0, -1.0], [0.5, 0.0], [-3.0, 1.0]]])
    targets = [{"labels": torch.tensor([0]), "boxes": gt}]
    queries, _ = criterion.matcher(logits, boxes, targets)[0]
    losses = criterion(logits, boxes, targets)
    pairs = len(queries)
    focal = 0.0
    for i in range(3):
        for k in range(2):
            p = _sigmoid(logits[0, i, k].item())
            positive = k == 0 and i in queries.tolist()
            p_t, a_t = (p, 0.25) if positive else (1 - p, 0.75)
            focal += -a_t * (1 - p_t) ** 2 * math.log(p_t)
    l1 = sum(
        sum(abs(u - v) for u, v in zip(_xyxy(boxes[0, i].tolist()), _xyxy(gt[0].tolist()), strict=True))
        for i in queries
    )
    giou = sum(1 - _iou_giou(boxes[0, i].tolist(), gt[0].tolist())[1] for i in queries)
    assert losses["loss_cls"].item() == pytest.approx(2 * focal / pairs, rel=1e-5)
    assert losses["loss_bbox"].item() == pytest.approx(5 * l1 / pairs, rel=1e-5)
    assert losses["loss_giou"].item() == pytest.approx(2 * giou / pairs, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", ["diffusiondet", "recursivedet_diffusiondet"])
def test_forward_backward_on_tiny_inputs(name):
    model = tiny_diffusiondet(name).train()
    batch = [make_input(64, 96, [[5, 5, 40, 30], [50, 10, 90, 60]], [0, 2]), make_input(80, 64, [], [], seed=1)]
    losses = model(batch)
    stages = [""] + [f"_{t}" for t in range(5)]
    assert set(losses) == {f"loss_{k}{s}" for k in ("cls", "bbox", "giou") for s in stages}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for module in (model.decoder, model.time_mlp):
        missing = [n for n, p in module.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert not missing, missing


def test_images_without_boxes():
    model = tiny_diffusiondet().train()
    losses = model([make_input(64, 64), make_input(64, 64, seed=1)])
    assert all(losses[f"loss_{k}"].item() == 0 for k in ("bbox", "giou"))
    assert losses["loss_cls"].item() > 0 and torch.isfinite(losses["loss_cls"])
    sum(losses.values()).backward()


def test_more_ground_truth_than_proposals():
    """Documented behaviour: a random N of the boxes seed the proposals; every box is a matching target, and
    the ones left without a free prediction stay unmatched."""
    model = tiny_diffusiondet(num_proposals=4).train()
    boxes = [[4 * i, 4 * i, 4 * i + 20, 4 * i + 20] for i in range(7)]
    batch = [make_input(64, 64, boxes, [i % 3 for i in range(7)])]
    targets = model.prepare_targets([batch[0]["instances"]])
    noisy, t = model.corrupt(targets)
    assert noisy.shape == (1, 4, 4) and t.shape == (1,)
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    logits, pred = torch.randn(1, 4, 3), targets[0]["boxes"][:4][None]
    queries, matched = model.criterion.matcher(logits, pred, targets)[0]
    assert len(queries) == 4 and len(set(queries.tolist())) == 4 and len(set(matched.tolist())) == 4


def _drawn(h, w, boxes, classes, image_id):
    x = make_input(h, w, boxes, classes)
    image = torch.full((3, h, w), 40, dtype=torch.uint8)
    colours = torch.tensor([[230, 40, 40], [40, 230, 40], [40, 40, 230]], dtype=torch.uint8)
    for (x1, y1, x2, y2), c in zip(boxes, classes, strict=True):
        image[:, y1:y2, x1:x2] = colours[c][:, None, None]
    x["image"], x["image_id"] = image, image_id
    return x


@pytest.mark.slow
def test_tiny_model_overfits_two_images():
    """Trained on two images (coloured boxes, 3 objects), 1-step sampling from noise puts a detection of the
    right class with IoU > 0.5 on every object among each image's top (objects + 1) detections."""
    torch.set_num_threads(2)
    model = tiny_diffusiondet(num_proposals=16, **{"decoder.box_delta_init": "zero", "decoder.num_stages": 2})
    batch = [
        _drawn(64, 64, [[4, 6, 30, 40], [34, 30, 60, 58]], [0, 2], 0),
        _drawn(64, 64, [[10, 10, 50, 30]], [1], 1),
    ]
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0)
    torch.manual_seed(0)
    model.train()
    for _ in range(1000):
        loss = sum(model(batch).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        outputs = model(batch)
    for x, output in zip(batch, outputs, strict=True):
        gt, detections = x["instances"], output["instances"]
        top = detections[detections.scores.argsort(descending=True)[: len(gt) + 1]]
        iou = box_iou(gt.gt_boxes.tensor, top.pred_boxes.tensor)
        for j in range(len(gt)):
            assert ((iou[j] > 0.5) & (top.pred_classes == gt.gt_classes[j])).any(), (j, iou, top)
