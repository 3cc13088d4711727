"""Parts of the side-by-side comparison that run without an official checkout: the interleaved timing, the
training batch, and the refusal of a path that is not an official checkout (through the benchmark command)."""

import pytest
import torch

from recursivedet.analysis import benchmark
from recursivedet.analysis.benchmark import training_batch
from recursivedet.checkpoint.side_by_side import interleaved_timing


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


def test_benchmark_refuses_a_path_that_is_not_an_official_checkout(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--official-root", str(tmp_path), "--arch", "recursivedet"])
    assert exit_info.value.code == 2
    assert "is not a checkout of the official code" in capsys.readouterr().err


def test_benchmark_refuses_options_the_comparison_would_ignore(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--official-root", str(tmp_path), "--device", "cuda"])
    assert exit_info.value.code == 2
    assert "--device" in capsys.readouterr().err
