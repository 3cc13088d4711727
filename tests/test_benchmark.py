"""The benchmark command runs and reports every figure (no timing assertions: speed lives in the command)."""

import json

import pytest

from recursivedet.analysis.benchmark import main
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
    assert 0 < result["head_fraction_of_peak"] and result["peak_memory_mb"] > 0
    assert [(s["proposals"], s["size"]) for s in result["sweep"]] == [(10, [96, 96])]
    assert "decoder head" in capsys.readouterr().out
