"""python -m recursivedet.export: COCO results json for a folder of images or a registered dataset; unreadable
images, wrong arguments and interrupted writes."""

import errno
import json
import logging
import resource
import shutil
import signal
from contextlib import contextmanager

import pytest
import torch
from model_factory import one_thread
from PIL import Image
from pycocotools.coco import COCO
from training_setup import TINY_CONFIG, run_main, run_python, tiny_run_at

from recursivedet import export
from recursivedet.data import register_coco_dataset
from recursivedet.errors import run_command


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run (its folder and config, for the tests of this module) and the checkpoint of its 2-iteration
    training."""
    with tiny_run_at(tmp_path_factory.mktemp("export")) as root:
        run_main(TINY_CONFIG, "train.max_iter=2")
        yield root, TINY_CONFIG, root / "output" / "model_final.pth"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def export_warnings():
    """The export's warnings, as logged (a handler of its own: whether the ``recursivedet`` logs propagate to
    pytest's depends on which detectron2 set-up ran first)."""
    log, handler = logging.getLogger("recursivedet.export"), _Records()
    log.addHandler(handler)
    yield handler.messages
    log.removeHandler(handler)


def _export(config, weights, *args):
    with one_thread():
        return export.main(["--config-file", str(config), "--weights", str(weights), *args])


def _command(*argv) -> int:
    """The export as the command line runs it (through ``run_command``); returns the exit status."""
    with one_thread(), pytest.raises(SystemExit) as stop:
        run_command(lambda: export.command([str(a) for a in argv]))
    return stop.value.code


def test_folder_of_images_gives_results_and_an_images_json(trained, tmp_path):
    root, config, weights = trained
    folder = tmp_path / "images"
    shutil.copytree(root / "data" / "tiny_val", folder)
    Image.open(folder / "000.png").convert("RGB").resize((80, 48)).save(folder / "wide.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    result = _export(
        config, weights, "--images", str(folder), "--output", str(out), "--score-threshold", "0.02", "--visualize"
    )
    written = result.written
    assert result.skipped == {} and result.num_images == 4

    images = json.loads(written["images"].read_text())
    assert [im["file_name"] for im in images["images"]] == ["000.png", "001.png", "002.png", "wide.jpg"]
    assert [im["id"] for im in images["images"]] == [1, 2, 3, 4]
    assert images["images"][3]["width"] == 80 and images["images"][3]["height"] == 48  # original size
    # categories of the training dataset, with its (non-contiguous) ids
    assert images["categories"] == [{"id": 1, "name": "c0"}, {"id": 3, "name": "c1"}, {"id": 5, "name": "c2"}]
    results = json.loads(written["predictions"].read_text())
    # 8 proposals x 3 classes per image before the threshold; an untrained model scores about 0.01-0.04
    assert 0 < len(results) < 4 * 24 and all(r["score"] >= 0.02 for r in results)
    dt = COCO(str(written["images"])).loadRes(str(written["predictions"]))
    assert set(dt.getImgIds()) <= {1, 2, 3, 4} and {r["category_id"] for r in results} <= {1, 3, 5}
    for r in results:  # boxes in the original image's coordinates
        x, y, w, h = r["bbox"]
        im = images["images"][r["image_id"] - 1]
        assert -1e-3 <= x and x + w <= im["width"] + 1e-3 and -1e-3 <= y and y + h <= im["height"] + 1e-3
    assert len(list((out / "visualizations").glob("*.png"))) == 4
    assert sorted(p.name for p in out.iterdir()) == [
        ".recursivedet.lock",
        "images.json",
        "predictions.json",
        "visualizations",
    ]


def test_registered_dataset_keeps_its_image_and_category_ids(trained, tmp_path):
    root, config, weights = trained
    written = _export(config, weights, "--dataset", "tiny_val", "--output", str(tmp_path)).written
    assert "images" not in written
    results = json.loads(written["predictions"].read_text())
    assert results, "the top-k detections of a 0-threshold export cannot be empty"
    assert {r["image_id"] for r in results} == {100, 101, 102}
    assert {r["category_id"] for r in results} <= {1, 3, 5}
    COCO(str(root / "data" / "tiny_val.json")).loadRes(str(written["predictions"]))


def test_export_errors_name_what_is_missing(trained, tmp_path):
    _, config, weights = trained
    with pytest.raises(KeyError, match="'tiny_vall' is not registered; did you mean tiny_val"):
        _export(config, weights, "--dataset", "tiny_vall", "--output", str(tmp_path))
    with pytest.raises(ValueError, match=f"--images {tmp_path / 'nowhere'} does not exist"):
        _export(config, weights, "--images", str(tmp_path / "nowhere"), "--output", str(tmp_path))
    with pytest.raises(SystemExit):  # argparse: a wrong override stops with the message
        _export(config, weights, "--images", str(tmp_path), "--output", str(tmp_path), "model.num_proposal=3")


@pytest.mark.parametrize(
    "option, value",
    [("--score-threshold", "1.5"), ("--score-threshold", "-0.1"), ("--score-threshold", "nan")]
    + [("--vis-threshold", "2"), ("--vis-threshold", "NaN")],
)
def test_thresholds_outside_0_1_are_refused(tmp_path, capsys, option, value):
    argv = ["--config-file", "c.py", "--weights", "w.pth", "--images", str(tmp_path), "--output", str(tmp_path)]
    with pytest.raises(SystemExit) as stop:
        export.main([*argv, option, value])
    assert stop.value.code == 2
    expected = f"error: argument {option}: expected a score in [0, 1] (detection scores are sigmoid probabilities), "
    assert f"{expected}got {value}\n" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("num_workers", [0, 2])  # in a loader worker, an exception would end the whole loader
def test_unreadable_images_of_a_folder_are_skipped_with_a_warning(
    trained, tmp_path, export_warnings, capsys, num_workers
):
    root, config, weights = trained
    folder = tmp_path / "images"
    shutil.copytree(root / "data" / "tiny_val", folder)
    (folder / "001.png").write_bytes(b"not a png")
    (folder / "003.png").write_bytes((folder / "002.png").read_bytes()[:100])  # truncated
    out = tmp_path / "out"
    status = _command(
        "--config-file", config, "--weights", weights, "--images", folder, "--output", out,
        f"dataloader.test.num_workers={num_workers}",
    )  # fmt: skip
    assert status == 1
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"warning: 2 of 4 images could not be read and were skipped ({folder / '001.png'}, {folder / '003.png'}); "
        "the outputs cover the other 2"
    )
    assert export_warnings[0].startswith(
        f"skipped image 2: cannot read image {folder / '001.png'}: UnidentifiedImageError"
    )
    assert (
        export_warnings[1]
        == f"skipped image 4: cannot read image {folder / '003.png'}: OSError: image file is truncated"
    )
    assert export_warnings[2:] == ["skipped 2 of 4 images that could not be read"]
    # The readable images keep the ids of their place in the folder; the skipped ones are not listed.
    images = json.loads((out / "images.json").read_text())["images"]
    assert [(im["id"], im["file_name"]) for im in images] == [(1, "000.png"), (3, "002.png")]
    results = json.loads((out / "predictions.json").read_text())
    assert {r["image_id"] for r in results} == {1, 3}
    COCO(str(out / "images.json")).loadRes(str(out / "predictions.json"))


def test_missing_image_of_a_registered_dataset_is_skipped(trained, tmp_path, dataset_name, export_warnings):
    root, config, weights = trained
    shutil.copytree(root / "data" / "tiny_val", tmp_path / "images")
    (tmp_path / "images" / "001.png").unlink()
    name = dataset_name("export_missing_image")
    register_coco_dataset(name, str(root / "data" / "tiny_val.json"), str(tmp_path / "images"))
    result = _export(config, weights, "--dataset", name, "--output", str(tmp_path / "out"))
    missing = str(tmp_path / "images" / "001.png")
    assert result.skipped == {missing: f"image file not found: {missing}"}
    assert export_warnings == [
        f"skipped image 101: image file not found: {missing}",
        "skipped 1 of 3 images that could not be read",
    ]
    results = json.loads(result.written["predictions"].read_text())
    assert {r["image_id"] for r in results} == {100, 102}


def test_a_folder_without_a_readable_image_is_an_error(trained, tmp_path, capsys):
    _, config, weights = trained
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    (tmp_path / "images" / "b.jpg").mkdir()
    out = tmp_path / "out"
    status = _command("--config-file", config, "--weights", weights, "--images", tmp_path / "images", "--output", out)
    assert status == 2
    err = capsys.readouterr().err
    assert err.endswith(
        f"error: none of the 2 images of --images {tmp_path / 'images'} could be read (see the warnings above)\n"
    )
    assert not (out / "predictions.json").exists()


def test_wrong_paths_end_in_one_error_line(trained, tmp_path, capsys):
    _, config, weights = trained
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    (tmp_path / "out.json").write_text("{}")
    good = {"--config-file": config, "--weights": weights, "--images": tmp_path / "images", "--output": tmp_path / "o"}
    cases = [
        ({"--output": tmp_path / "out.json"}, f"--output {tmp_path / 'out.json'} is an existing file, not a folder"),
        ({"--config-file": tmp_path / "no.py"}, f"--config-file: config file {tmp_path / 'no.py'} does not exist"),
        ({"--config-file": tmp_path / "out.json"}, f"--config-file {tmp_path / 'out.json'} is not a LazyConfig file"),
        ({"--weights": tmp_path / "no.pth"}, f"--weights {tmp_path / 'no.pth'} does not exist"),
        ({"--weights": tmp_path}, f"--weights {tmp_path} is a directory, not a checkpoint file (.pth)"),
        ({"--images": tmp_path / "out.json"}, f"--images {tmp_path / 'out.json'} is a file, not a folder of images"),
        ({"--weights": tmp_path / "out.json"}, f"cannot read checkpoint {tmp_path / 'out.json'}: "),
    ]
    for change, message in cases:
        argv = [str(a) for key, value in {**good, **change}.items() for a in (key, value)]
        assert _command(*argv) == 2, change
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1 and "Traceback" not in err, err
    assert (tmp_path / "out.json").read_text() == "{}"


@pytest.mark.slow
def test_the_command_line_reports_a_wrong_output_in_one_line(trained, tmp_path):
    _, config, weights = trained
    (tmp_path / "out").write_text("")
    args = ["-m", "recursivedet.export", "--config-file", str(config), "--weights", str(weights)]
    args += ["--images", str(tmp_path), "--output", str(tmp_path / "out")]
    run = run_python(*args, timeout=120)
    assert run.returncode == 2 and run.stderr.splitlines()[-1] == (
        f"error: --output {tmp_path / 'out'} is an existing file, not a folder"
    )
    assert "Traceback" not in run.stderr


@contextmanager
def file_size_limit(limit: int):
    """Writes past ``limit`` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored: it would kill us)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_json_outputs_are_replaced_atomically(tmp_path):
    path = tmp_path / "predictions.json"
    path.write_text('["old"]')
    data = [{"image_id": i, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.5} for i in range(1000)]
    with file_size_limit(4096), pytest.raises(OSError) as failed:
        export.write_json(path, data)  # fails after writing 4096 bytes
    assert failed.value.errno == errno.EFBIG
    assert path.read_text() == '["old"]', "the old file must survive a failed write"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.json"], "no temporary file is left"
    export.write_json(path, data)
    assert json.loads(path.read_text()) == data


def test_a_class_count_other_than_the_datasets_stops_before_the_model_runs(trained, tmp_path, capsys):
    _, config, weights = trained
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "images" / "a.png")
    argv = ["--config-file", config, "--weights", weights, "--images", tmp_path / "images", "--output", tmp_path / "o"]
    assert _command(*map(str, argv), "model.decoder.stage.num_classes=7") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the model has 7 classes (model.decoder.stage.num_classes) but dataset ") and (
        err.count("\n") == 1
    ), err
    assert not (tmp_path / "o").exists()


def test_drawings_are_bounded_in_size_and_written_through_no_symlink(tmp_path):
    """A 5000 x 3000 photo is drawn with its longer side at MAX_DRAWING_SIDE; a symlink planted where the drawing
    goes is replaced by the drawing, its target left as it was."""
    import numpy as np
    from detectron2.data import MetadataCatalog
    from detectron2.structures import Boxes, Instances

    image = np.zeros((3000, 5000, 3), np.uint8)
    instances = Instances((3000, 5000), pred_boxes=Boxes(torch.tensor([[100.0, 200.0, 4000.0, 2500.0]])))
    instances.scores, instances.pred_classes = torch.tensor([0.9]), torch.tensor([0])
    drawing = export.draw_detections(image, instances, MetadataCatalog.get("drawing_test").set(thing_classes=["a"]))
    assert max(drawing.shape[:2]) == export.MAX_DRAWING_SIDE and drawing.shape[2] == 3
    assert drawing.any(), "the box is drawn"
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep")
    (tmp_path / "drawing.png").symlink_to(target)
    export.write_png(tmp_path / "drawing.png", drawing)
    assert target.read_text() == "keep" and not (tmp_path / "drawing.png").is_symlink()
    assert Image.open(tmp_path / "drawing.png").size == (drawing.shape[1], drawing.shape[0])


def test_an_images_folder_names_what_it_leaves_out(tmp_path, caplog):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.gif").write_bytes(b"")
    (tmp_path / "more").mkdir()
    with caplog.at_level(logging.WARNING, logger="recursivedet.export"):
        dicts = export.image_folder_dicts(str(tmp_path))
    assert [d["file_name"] for d in dicts] == [str(tmp_path / "a.png")]
    assert "left out 2 entries" in caplog.text and "b.gif, more/" in caplog.text
