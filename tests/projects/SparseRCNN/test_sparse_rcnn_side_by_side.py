"""Parts of the comparison with the official code that run without an official checkout: the interleaved
timing, the training batch, the order-free comparison of detections, and the refusal of a path that is not an
official checkout (by the comparison's command and by the benchmark command)."""

import pytest
import torch

from recursivedet.analysis import benchmark
from recursivedet.analysis.measure import interleaved_timing, training_batch
from recursivedet.analysis.output_diff import compare_image, image_sizes
from recursivedet.errors import run_command
from recursivedet.projects.SparseRCNN.side_by_side import OfficialCheckoutError, compare
from recursivedet.projects.SparseRCNN.side_by_side.__main__ import main as side_by_side_main


def test_timing_alternates_the_two_sides_abba_after_one_warm_up_each():
    calls = []

    def sampler(side):
        def run(part):
            calls.append((side, part))
            return (len(calls) * 1.0, len(calls) * 2.0)  # (wall, CPU): distinct values to find them again

        return run

    result = interleaved_timing(["head", "train"], sampler("ours"), sampler("official"), runs=3)
    head = [side for side, part in calls if part == "head"]
    assert head == ["ours", "official", "ours", "official", "official", "ours", "ours", "official"]
    assert calls[8:] == [(side, "train") for side in head]
    # ours' timed head runs were calls 3, 6, 7 (1-based): median 6, minimum 3, CPU median 12
    assert result["ours"]["head"] == {"wall": 6.0, "wall_min": 3.0, "cpu": 12.0}
    assert result["official"]["head"] == {"wall": 5.0, "wall_min": 4.0, "cpu": 10.0}


def test_training_batch_is_seeded_and_inside_the_images():
    batch = training_batch(seed=3, num_images=2, size=(64, 96), num_boxes=4, num_classes=7)
    again = training_batch(seed=3, num_images=2, size=(64, 96), num_boxes=4, num_classes=7)
    assert len(batch) == 2
    for (image, boxes, classes), (image2, boxes2, classes2) in zip(batch, again, strict=True):
        assert image.shape == (3, 64, 96) and image.dtype == torch.uint8 and torch.equal(image, image2)
        assert boxes.shape == (4, 4) and torch.equal(boxes, boxes2) and torch.equal(classes, classes2)
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes[:, 2] <= 96).all() and (boxes[:, 3] <= 64).all()
        assert ((classes >= 0) & (classes < 7)).all()


def test_default_sizes_and_order_free_comparison():
    sizes = image_sizes([(800, 1216)], 3)
    assert sizes[:2] == [(800, 1216), (600, 900)]
    assert all(h % 32 and w % 32 for h, w in sizes[1:])

    g = torch.Generator().manual_seed(0)
    h, w, stages, n, k = 60, 80, 2, 5, 3
    logits = torch.randn(stages, n, k, generator=g)
    boxes = torch.tensor([10.0, 10.0, 40.0, 50.0]) + torch.rand(stages, n, 4, generator=g) * 10
    flat = logits[-1].sigmoid().flatten()
    scores, index = flat.topk(n)
    result = {
        "stage_logits": logits,
        "stage_pixel_boxes": boxes,
        "boxes": boxes[-1][index // k],
        "scores": scores,
        "classes": index % k,
    }
    order = torch.randperm(n, generator=g)  # the official top-k is unsorted
    shuffled = dict(result, boxes=result["boxes"][order], scores=scores[order], classes=result["classes"][order])
    report = compare_image(result, shuffled, h, w)
    assert report["final"]["common"] == n and report["final"]["only_in_one"] == 0
    assert report["final"]["max_abs_score_diff"] == 0 and report["final"]["max_abs_box_diff_px"] == 0
    assert all(s["max_abs_score_diff"] == 0 and s["max_abs_box_diff_px"] == 0 for s in report["stages"])


def test_compare_refuses_a_path_that_is_not_an_official_checkout(tmp_path):
    with pytest.raises(OfficialCheckoutError, match="is not a checkout of the official code"):
        compare(official_root=str(tmp_path), arch="recursivedet")


@pytest.mark.parametrize(
    "command",
    [side_by_side_main, benchmark.main],
    ids=["side_by_side", "benchmark"],
)
def test_commands_refuse_a_path_that_is_not_an_official_checkout(command, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(lambda: command(["--official-root", str(tmp_path), "--arch", "recursivedet"]))
    assert exit_info.value.code == 2
    assert f"error: {tmp_path} is not a checkout of the official code" in capsys.readouterr().err


def test_benchmark_refuses_options_the_comparison_would_ignore(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--official-root", str(tmp_path), "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device" in capsys.readouterr().err
