"""python -m recursivedet.deploy: the exported graph (TorchScript, ExportedProgram and ONNX) against the eager model
at image sizes other than the one it was captured at; the trace-friendly RoIAlign against the eager one; the command's
files, check and errors."""

import copy
import json
import sys

import pytest
import torch
from model_factory import one_thread, tiny_model
from training_setup import TINY_CONFIG, run_main, tiny_run_at

from recursivedet.deploy import command as deploy
from recursivedet.deploy.check import Difference, compare, reference
from recursivedet.deploy.formats import MissingRuntimeError, load, write
from recursivedet.deploy.graph import DeployableDetector, stacked_roi_align
from recursivedet.engine.output_folder import LOCK_FILE, output_folder
from recursivedet.errors import run_command
from recursivedet.modeling.roi_align import gather_roi_align


def _random_deltas(model):
    """Box deltas that move the boxes (the zero init would leave every box where it starts)."""
    torch.manual_seed(1)
    for stage in model.decoder.stages:
        torch.nn.init.normal_(stage.box_delta.weight, std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def tiny():
    return _random_deltas(tiny_model("recursivedet", **{"decoder.box_delta_init": "zero"}))


def test_stacked_roi_align_equals_the_gathered_one(tiny):
    torch.manual_seed(0)
    pooler = tiny.decoder.pooler
    features = [torch.randn(2, 8, 64 // s, 96 // s, dtype=torch.float64) for s in (4, 8, 16, 32)]
    xy = torch.rand(2, 20, 2, dtype=torch.float64) * torch.tensor([90.0, 60.0], dtype=torch.float64)
    wh = torch.rand(2, 20, 2, dtype=torch.float64) * 60 + 0.5  # small to large: every level, some outside
    boxes = torch.cat((xy - 5, xy + wh), dim=-1)
    expected = gather_roi_align(pooler, features, boxes)
    torch.testing.assert_close(stacked_roi_align(pooler, features, boxes), expected, rtol=1e-12, atol=1e-12)


def _images():
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, 256, (3, h, w), generator=g).float() for h, w in ((64, 96), (77, 50), (128, 128))]


SLOW = pytest.mark.slow  # an export and its check on 6 images take 10-40 s even for the tiny model
SUFFIX = {"torchscript": ".ts", "pt2": ".pt2", "onnx": ".onnx"}


@pytest.mark.parametrize(
    "fmt, variant",
    [
        pytest.param("torchscript", {"rego.num_stages": 2}, marks=SLOW),
        pytest.param("pt2", {"decoder.stage_sharing": "none", "decoder.num_stages": 2}, marks=SLOW),
        pytest.param(
            "onnx",
            {
                "decoder.stage_sharing": "none",
                "decoder.analytic_roi_pe": False,
                "decoder.num_stages": 2,
                "rego.num_stages": 1,
            },
            marks=SLOW,
        ),
    ],
)
def test_exported_model_matches_pytorch_at_other_sizes(fmt, variant, tmp_path):
    model = _random_deltas(tiny_model("recursivedet", **{"decoder.box_delta_init": "zero", **variant}))
    images = _images()
    with one_thread():
        path = write(DeployableDetector(copy.deepcopy(model)), images[0], fmt, tmp_path / f"m{SUFFIX[fmt]}")
        # captured at 64x96; the others (and their distorted copies) are other sizes and paddings
        difference = compare(model, load(path), images)
    assert len(difference.sizes) == 6 and len(set(difference.sizes)) == 6
    assert difference.class_mismatches == 0 and difference.detections == 6 * 24
    assert difference.box < 1e-2 and difference.score < 1e-4, difference.describe()


def test_graph_outputs_are_the_models_detections(tiny):
    image = _images()[1]
    with torch.no_grad():
        boxes, scores, classes = DeployableDetector(copy.deepcopy(tiny))(image)
        instances = tiny([{"image": image}])[0]["instances"]
    expected = reference(tiny, image)
    torch.testing.assert_close(boxes, expected[0], rtol=0, atol=1e-4)
    assert torch.equal(classes, expected[2]) and torch.equal(classes, instances.pred_classes)
    torch.testing.assert_close(scores, instances.scores, rtol=0, atol=1e-6)
    assert (boxes[:, 2] <= 50).all() and (boxes[:, 3] <= 77).all() and (boxes >= 0).all()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    with tiny_run_at(tmp_path_factory.mktemp("deploy")) as root:
        run_main(TINY_CONFIG, "train.max_iter=2")
        yield root, root / "output" / "model_final.pth"


def _deploy(weights, output, *args):
    with one_thread():
        return deploy.main(
            ["--config-file", str(TINY_CONFIG), "--weights", str(weights), "--output", str(output), *args]
        )


def _status(*argv) -> int:
    with one_thread(), pytest.raises(SystemExit) as stop:
        run_command(lambda: deploy.command([str(a) for a in argv]))
    return stop.value.code


@pytest.mark.slow
def test_command_writes_the_formats_and_reports_the_differences(trained, tmp_path, capsys):
    _, weights = trained
    report = _deploy(weights, tmp_path, "--format", "pt2", "onnx", "--check-images", "1")
    assert report["failed"] == []
    out = capsys.readouterr().out
    for fmt in ("pt2", "onnx"):
        assert report[fmt]["within_tolerance"] and report[fmt]["box"] < 1e-2 and f"{fmt}: wrote" in out
    info = json.loads((tmp_path / "deploy.json").read_text())
    assert info["classes"] == ["c0", "c1", "c2"] and info["input_format"] == "RGB"
    assert info["test_resize"] == {"shortest_edge": [64, 64], "max_size": 96}
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted([LOCK_FILE, "deploy.json", "model.onnx", "model.pt2"])  # the weights inside model.onnx
    # a tolerance the export cannot meet fails the command, after writing everything (TorchScript)
    status = _status(
        "--config-file", TINY_CONFIG, "--weights", weights, "--output", tmp_path / "strict", "--format", "torchscript",
        "--check-images", "1", "--score-tolerance", "-1",
    )  # fmt: skip
    assert status == 1 and "differ from PyTorch's by more than the tolerance" in capsys.readouterr().err


def test_command_errors_are_one_line(trained, tmp_path, capsys, monkeypatch):
    _, weights = trained
    common = ["--config-file", TINY_CONFIG, "--weights", weights, "--output", tmp_path]
    assert _status(*common, "--format", "tensorrt") == 2
    assert "invalid choice: 'tensorrt'" in capsys.readouterr().err
    with output_folder(tmp_path / "held", "another command"):
        assert _status(*common[:-1], tmp_path / "held", "--format", "torchscript") == 2
    err = capsys.readouterr().err
    (line,) = err.strip().splitlines()
    assert line.startswith(f"error: output folder {tmp_path / 'held'} is in use by process")
    assert "another command" in line
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    assert _status(*common, "--format", "onnx") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "error: onnxruntime is not installed: it runs and checks the ONNX model (pip install "
        "'recursivedet[deploy]', or pip install onnxruntime)"
    ]
    with pytest.raises(MissingRuntimeError):
        load(tmp_path / "model.onnx")
    assert _status(*common[:-2], "--output", tmp_path / "nope.pth", "--format", "torchscript", "--weights", "x") == 2
    assert "error: --weights x does not exist" in capsys.readouterr().err


def test_check_pairs_detections_whose_near_equal_scores_swapped_ranks():
    """Two detections 1e-5 apart in score may come out in the other order from an exported model: the check pairs
    them one to one (no class differs, the differences are those of the pairs); a changed class still counts."""
    boxes = torch.tensor([[0.0, 0.0, 10, 10], [5, 5, 20, 20], [30, 30, 40, 40]])
    scores, classes = torch.tensor([0.9, 0.00495, 0.00494]), torch.tensor([0, 2, 1])
    order = [0, 2, 1]  # the second and third swap ranks
    exported = (boxes[order] + 0.01, scores[order] + torch.tensor([0.0, 2e-5, 0.0]), classes[order])
    difference = Difference()
    difference.add((boxes, scores, classes), exported)
    assert (
        difference.class_mismatches == 0 and difference.box == pytest.approx(0.01, abs=1e-5) and difference.score < 3e-5
    )
    changed = (boxes, scores, torch.tensor([0, 2, 0]))
    difference.add((boxes, scores, classes), changed)
    assert difference.class_mismatches == 1


def test_a_setting_that_cannot_be_exported_stops_in_one_line_before_anything_is_written(trained, tmp_path, capsys):
    """RoIAlign without a fixed sampling grid (sampling_ratio 0: as many points as the box covers) has no graph."""
    _, weights = trained
    out = tmp_path / "deployed"
    argv = ["--config-file", TINY_CONFIG, "--weights", weights, "--format", "torchscript", "pt2", "--output", out]
    assert _status(*argv, "model.decoder.pooler.sampling_ratio=0") == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith("export needs RoIAlign poolers with a fixed sampling ratio (ROIAlignV2, ratio > 0)")
    assert not out.exists()


def test_a_symlink_where_the_model_goes_is_replaced_not_written_through(tmp_path):
    model = tiny_model("recursivedet").eval()
    target = tmp_path / "elsewhere.bin"
    target.write_bytes(b"keep")
    (tmp_path / "model.ts").symlink_to(target)
    write(DeployableDetector(model), _images()[0], "torchscript", tmp_path / "model.ts")
    assert target.read_bytes() == b"keep" and not (tmp_path / "model.ts").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere.bin", "model.ts"]  # no temporary file left
