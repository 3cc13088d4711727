"""python -m recursivedet.export: COCO results json for a folder of images or a registered dataset."""

import json
import shutil

import pytest
from PIL import Image
from pycocotools.coco import COCO
from test_train_net import make_setup, one_thread, run_main

from recursivedet import export


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A config and the checkpoint of a 2-iteration training."""
    root = tmp_path_factory.mktemp("export")
    config = make_setup(root)
    run_main(config, "train.max_iter=2")
    return root, config, root / "output" / "model_final.pth"


def _export(config, weights, *args):
    with one_thread():
        return export.main(["--config-file", str(config), "--weights", str(weights), *args])


def test_folder_of_images_gives_results_and_an_images_json(trained, tmp_path):
    root, config, weights = trained
    folder = tmp_path / "images"
    shutil.copytree(root / "data" / "tiny_val", folder)
    Image.open(folder / "000.png").convert("RGB").resize((80, 48)).save(folder / "wide.jpg")
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    written = _export(
        config, weights, "--images", str(folder), "--output", str(out), "--score-threshold", "0.02", "--visualize"
    )

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


def test_registered_dataset_keeps_its_image_and_category_ids(trained, tmp_path):
    root, config, weights = trained
    written = _export(config, weights, "--dataset", "tiny_val", "--output", str(tmp_path))
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
    with pytest.raises(ValueError, match=f"image folder not found: {tmp_path / 'nowhere'}"):
        _export(config, weights, "--images", str(tmp_path / "nowhere"), "--output", str(tmp_path))
    with pytest.raises(SystemExit):  # argparse: a wrong override stops with the message
        _export(config, weights, "--images", str(tmp_path), "--output", str(tmp_path), "model.num_proposal=3")
