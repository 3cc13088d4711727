"""The benchmark command runs and reports every figure (no timing assertions: speed lives in the command), and
counts the work of the part it times."""

import json

import pytest
import torch
from model_factory import tiny_adamixer, tiny_diffusiondet, tiny_model

from recursivedet.analysis.benchmark import main
from recursivedet.analysis.measure import image_input, model_parts, multiply_adds
from recursivedet.analysis.model_cost import flops_by_module
from recursivedet.model_zoo import get_config_file

CONFIG = get_config_file("SparseRCNN/recursivedet_shapes_demo.py")


@pytest.mark.slow
def test_benchmark_reports_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    main(
        [
            "--config-file", CONFIG, "--image-size", "128x160", "--repeats", "1",
            "--train-batch", "1", "--train-size", "128x128", "--proposals", "10", "--sizes", "96x96",
            "--json", str(out), "model.backbone.pretrained=False",
        ]
    )  # fmt: skip
    result = json.loads(out.read_text())
    for key in ("params", "gflops", "head_gflops", "model_s", "backbone_s", "head_s", "train_step_s"):
        assert result[key] > 0, key
    assert 0 < result["head_fraction_of_peak"] <= 1 and result["peak_memory_mb"] > 0
    assert [(s["proposals"], s["size"]) for s in result["sweep"]] == [(10, [96, 96])]
    assert "decoder head" in capsys.readouterr().out


def _head_and_model_counts(model, h=32, w=48):
    parts = model_parts(model.eval(), [image_input(h, w, torch.device("cpu"))])
    return multiply_adds(parts["head"]), multiply_adds(parts["model"])


@pytest.mark.parametrize("build", [tiny_model, tiny_diffusiondet, tiny_adamixer])
def test_the_head_is_counted_as_it_is_timed(build):
    """The head's multiply-adds are counted on the call that is timed; fvcore's count of the decoder module, the
    reference, also counts its norms, a few percent more."""
    model = build().eval()
    head = multiply_adds(model_parts(model, [image_input(32, 48, torch.device("cpu"))])["head"])
    reference = flops_by_module(model, 32, 48)
    assert 0.85 * reference["decoder"] <= head <= reference["decoder"] < reference[""]


def test_a_diffusiondet_head_is_one_sampling_step_however_many_the_model_takes():
    """The count that once made a 4-step DiffusionDet head run at 141% of the machine's matrix-product speed."""
    model = tiny_diffusiondet()
    one_step = _head_and_model_counts(model)
    model.sampler.steps = 4
    four_steps = _head_and_model_counts(model)
    assert four_steps[0] == one_step[0]
    backbone = one_step[1] - one_step[0]
    assert four_steps[1] == pytest.approx(backbone + 4 * one_step[0], rel=0.02)
