"""Test-time augmentation: weighted box fusion against a brute-force reference, the versions' boxes mapped
back to the image (resize and flip), the config switch and its errors."""

import math
import random

import pytest
import torch
from model_factory import one_thread, tiny_model

from recursivedet.errors import ConfigValueError
from recursivedet.inference.tta import TestTimeAugmentation, weighted_boxes_fusion, with_tta
from recursivedet.model_zoo import get_config


def _iou(a, b):
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_wbf(boxes, scores, labels, num_versions, threshold):
    """WBF written out with lists, one box at a time (the published algorithm, 'avg' confidences)."""
    fused = []  # [label, members [(score, box)], fused box]
    for i in sorted(range(len(boxes)), key=lambda i: -scores[i]):
        best, best_iou = None, threshold
        for cluster in fused:
            if cluster[0] == labels[i]:
                iou = _iou(boxes[i], cluster[2])
                if iou > best_iou:
                    best, best_iou = cluster, iou
        if best is None:
            fused.append([labels[i], [(scores[i], boxes[i])], list(boxes[i])])
        else:
            best[1].append((scores[i], boxes[i]))
            total = sum(s for s, _ in best[1])
            best[2] = [sum(s * b[k] for s, b in best[1]) / total for k in range(4)]
    out = []
    for label, members, box in fused:
        mean = sum(s for s, _ in members) / len(members)
        out.append((mean * min(len(members), num_versions) / num_versions, label, box))
    return sorted(out, key=lambda t: -t[0])


@pytest.mark.parametrize("seed", range(8))
def test_weighted_box_fusion_matches_the_brute_force_reference(seed):
    rng = random.Random(seed)
    boxes, scores, labels = [], [], []
    for _ in range(rng.randint(0, 40)):
        # jittered copies of a few objects, as versions of one image give
        x, y, w, h = rng.choice([(10, 10, 30, 20), (50, 40, 20, 40), (12, 14, 25, 22)])
        j = [rng.uniform(-4, 4) for _ in range(4)]
        boxes.append([x + j[0], y + j[1], x + w + j[2], y + h + j[3]])
        scores.append(rng.random())
        labels.append(rng.randint(0, 2))
    expected = _reference_wbf(boxes, scores, labels, 4, 0.55)
    b, s, lab = weighted_boxes_fusion(
        torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
        torch.tensor(scores, dtype=torch.float64),
        torch.tensor(labels, dtype=torch.int64),
        num_versions=4,
        iou_threshold=0.55,
    )
    assert len(b) == len(expected)
    for i, (score, label, box) in enumerate(expected):
        assert math.isclose(float(s[i]), score, rel_tol=1e-12) and int(lab[i]) == label
        assert b[i].tolist() == pytest.approx(box, rel=1e-12)


def test_boxes_of_one_box_per_version_fuse_to_their_weighted_mean():
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]])
    b, s, lab = weighted_boxes_fusion(boxes, torch.tensor([0.8, 0.2, 0.5]), torch.tensor([1, 1, 1]), 2)
    torch.testing.assert_close(b[0], torch.tensor([0.2, 0.2, 10.2, 10.2]))
    torch.testing.assert_close(s, torch.tensor([0.5, 0.25]))  # one of two versions found the second box
    assert lab.tolist() == [1, 1]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(1)
    m = tiny_model("recursivedet", **{"decoder.box_delta_init": "zero"})
    for stage in m.decoder.stages:
        torch.nn.init.normal_(stage.box_delta.weight, std=0.1)
    return m.eval()


def _input(h=64, w=96, height=128, width=192):
    g = torch.Generator().manual_seed(0)
    return {"image": torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8), "height": height, "width": width}


def _sorted(instances):
    order = torch.argsort(instances.scores, descending=True)
    return instances.pred_boxes.tensor[order], instances.scores[order], instances.pred_classes[order]


def test_one_version_without_merging_is_the_model(model):
    x = _input()
    tta = TestTimeAugmentation(model, min_sizes=[64], max_size=1000, flip=False, merge="nms", iou_threshold=1.0)
    with one_thread(), torch.no_grad():
        expected = _sorted(model([x])[0]["instances"])
        got = _sorted(tta([x])[0]["instances"])
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b)


def test_flipped_versions_come_back_in_image_coordinates(model):
    x = _input()
    mirrored = dict(x, image=x["image"].flip(-1))
    tta = TestTimeAugmentation(model, min_sizes=[64], max_size=1000, flip=True, merge="nms", iou_threshold=1.0)
    tta.detections_per_image = 1000
    with one_thread(), torch.no_grad():
        plain = model([x])[0]["instances"]
        flipped = model([mirrored])[0]["instances"]
        got = tta([x])[0]["instances"]
    fb = flipped.pred_boxes.tensor
    unflipped = torch.stack((192 - fb[:, 2], fb[:, 1], 192 - fb[:, 0], fb[:, 3]), dim=1)
    expected = torch.cat((plain.pred_boxes.tensor, unflipped))
    expected_scores = torch.cat((plain.scores, flipped.scores))
    order = torch.argsort(expected_scores, descending=True)
    got_boxes, got_scores, _ = _sorted(got)
    # the versions run as one batch: the same numbers up to float rounding
    torch.testing.assert_close(got_scores, expected_scores[order], rtol=0, atol=1e-5)
    torch.testing.assert_close(got_boxes, expected[order], rtol=0, atol=1e-2)


def test_scales_and_merging_keep_the_model_s_detection_count(model):
    tta = TestTimeAugmentation(model, min_sizes=[48, 64, 80], max_size=1000, flip=True, merge="wbf")
    with one_thread(), torch.no_grad():
        (out,) = tta([_input()])
    inst = out["instances"]
    assert tta.num_versions == 6 and 0 < len(inst) <= model.detections_per_image
    assert inst.image_size == (128, 192) and (inst.scores[:-1] >= inst.scores[1:]).all()


def test_config_switch_and_its_errors(model):
    cfg = get_config("SparseRCNN/recursivedet_shapes_demo.py")
    assert with_tta(cfg, model) is model  # off by default
    cfg.dataloader.tta.enabled = True
    wrapped = with_tta(cfg, model)
    assert isinstance(wrapped, TestTimeAugmentation) and wrapped.num_versions == 6
    cfg.dataloader.tta.merge = "soft"
    with pytest.raises(ConfigValueError, match="dataloader.tta.merge must be one of"):
        with_tta(cfg, model)
    cfg.dataloader.tta.merge = "nms"
    cfg.dataloader.tta.min_sizes = []
    with pytest.raises(ConfigValueError, match="dataloader.tta.min_sizes"):
        with_tta(cfg, model)
