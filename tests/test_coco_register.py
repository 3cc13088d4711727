"""Registration of users' COCO json: a valid file loads; each kind of mistake names the file and the culprit."""

import json
import re

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image

from recursivedet.data import DatasetError, read_image_checked, register_coco_dataset, validate_coco_json


def _coco():
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [0, 0, 40, 30], "area": 1200, "iscrowd": 0},
        ],
        "categories": [{"id": 9, "name": "dog"}, {"id": 7, "name": "cat"}],
    }


@pytest.fixture
def write_json(tmp_path):
    def write(content, name="train.json"):
        path = tmp_path / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    return write


def test_valid_dataset_loads_without_images(write_json, dataset_name, tmp_path):
    name = dataset_name()
    path = write_json(_coco())
    register_coco_dataset(name, path, tmp_path / "no_such_folder", validate_now=True)
    meta = MetadataCatalog.get(name)
    assert (meta.json_file, meta.evaluator_type) == (str(path), "coco")
    dicts = DatasetCatalog.get(name)
    assert [d["image_id"] for d in dicts] == [1, 2]
    assert dicts[0]["file_name"] == str(tmp_path / "no_such_folder" / "a.png")
    assert meta.thing_classes == ["cat", "dog"]  # sorted by category id
    assert [a["category_id"] for d in dicts for a in d["annotations"]] == [0, 1]


def _set(path, value):
    """Mutation that sets coco[path[0]][path[1]]... = value."""

    def apply(coco):
        target = coco
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


def _delete(key):
    return lambda coco: coco.pop(key)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (_delete("categories"), "no 'categories' key"),
        (_set(["categories"], []), "'categories' is empty"),
        (_delete("images"), "no 'images' key"),
        (_set(["annotations", 1, "image_id"], 99), "annotations[1] (id=2): image_id=99 is not an id in 'images'"),
        (
            _set(["annotations", 0, "category_id"], 3),
            "annotations[0] (id=1): category_id=3 is not an id in 'categories'",
        ),
        (_set(["annotations", 0, "bbox"], [2, 3, 0, 8]), "annotations[0] (id=1): degenerate bbox=[2, 3, 0, 8]"),
        (_set(["annotations", 0, "bbox"], [2, 3, 5, -1]), "degenerate bbox=[2, 3, 5, -1]"),
        (_set(["annotations", 0, "bbox"], [35, 3, 10, 8]), "bbox=[35, 3, 10, 8] (xywh) lies outside its image id=1"),
        (_set(["annotations", 0, "bbox"], [-5, 3, 10, 8]), "lies outside its image id=1 of width=40 height=30"),
        (_set(["annotations", 0, "bbox"], [1, 2, 3]), "bbox=[1, 2, 3] must be 4 finite numbers"),
        (_set(["annotations", 1, "id"], 1), "id=1 is used twice in 'annotations'"),
        (_set(["images", 0, "width"], "40"), "images[0] (id=1): width='40' is not int or float"),
        (_set(["annotations", 0, "ignore"], 1), "'ignore'=1 is not supported"),
        (_set(["annotations", 0, "image_id"], [1]), "annotations[0] (id=1): image_id=[1] is not int or str"),
        (_set(["annotations", 0, "iscrowd"], "yes"), "annotations[0] (id=1): iscrowd='yes' must be 0 or 1"),
        (_set(["annotations", 1, "iscrowd"], True), "annotations[1] (id=2): iscrowd=True must be 0 or 1"),
        (_set(["annotations", 0, "iscrowd"], 2), "annotations[0] (id=1): iscrowd=2 must be 0 or 1"),
        (_set(["categories", 1, "name"], "dog"), "categories[1] (id=7): name='dog' is also the name of id=9"),
        (_set(["images"], []), "'images' is empty: the dataset has no images"),
        (_set(["images", 0, "width"], 0), "images[0] (id=1): invalid width=0 (must be a positive finite number)"),
    ],
)
def test_invalid_json_names_file_and_culprit(mutate, expected, write_json, dataset_name, tmp_path):
    coco = _coco()
    mutate(coco)
    path = write_json(coco)
    name = dataset_name()
    register_coco_dataset(name, path, tmp_path)  # lazy: registration does not read the json
    pattern = re.escape(str(path)) + ".*" + re.escape(expected)
    with pytest.raises(DatasetError, match=re.compile(pattern, re.S)):
        DatasetCatalog.get(name)
    with pytest.raises(DatasetError, match=re.compile(pattern, re.S)):
        register_coco_dataset(dataset_name(), path, tmp_path, validate_now=True)


def test_json_is_checked_again_when_it_changes(write_json, dataset_name, tmp_path):
    path = write_json(_coco())
    name = dataset_name()
    register_coco_dataset(name, path, tmp_path)
    assert len(DatasetCatalog.get(name)) == 2
    coco = _coco()
    coco["annotations"][0]["bbox"] = [2, 3, 10, 800]
    write_json(coco)
    with pytest.raises(DatasetError, match="(?s)" + re.escape(str(path)) + ".*outside its image"):
        DatasetCatalog.get(name)


def test_many_problems_are_counted(write_json):
    coco = _coco()
    coco["annotations"] = [{**coco["annotations"][0], "id": i, "image_id": 50} for i in range(1, 31)]
    with pytest.raises(DatasetError, match=r"(?s)30 problem\(s\).*and 20 more"):
        validate_coco_json(write_json(coco))


def test_missing_json(tmp_path, dataset_name):
    path = tmp_path / "missing.json"
    name = dataset_name()
    register_coco_dataset(name, path, tmp_path)
    with pytest.raises(DatasetError, match="annotation file not found: " + re.escape(str(path))):
        DatasetCatalog.get(name)


def test_invalid_json_gives_position(write_json):
    path = write_json('{"images": [],\n "categories": [}\n')
    with pytest.raises(DatasetError, match=re.escape(str(path)) + ": invalid json at line 2 column 17"):
        validate_coco_json(path)


def test_name_already_registered(write_json, dataset_name, tmp_path):
    path = write_json(_coco())
    other = write_json(_coco(), "other.json")
    name = dataset_name()
    register_coco_dataset(name, path, tmp_path)
    with pytest.raises(DatasetError) as info:
        register_coco_dataset(name, other, tmp_path)
    assert str(info.value) == (
        f"dataset name '{name}' is already registered (registering {other}): its json_file is {path}, "
        f"not {other}; register different data under another name"
    )
    with pytest.raises(DatasetError, match=f"its image_root is {re.escape(str(tmp_path))}, not .*images"):
        register_coco_dataset(name, path, tmp_path / "images")
    with pytest.raises(DatasetError, match=r"its metadata is \{\}, not \{'thing_colors': \[\[1, 2, 3\]\]\}"):
        register_coco_dataset(name, path, tmp_path, metadata={"thing_colors": [[1, 2, 3]]})
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_dataset("coco_2017_train", path, tmp_path)  # detectron2's built-in names too
    DatasetCatalog.remove(name)  # metadata of the old registration is still there
    with pytest.raises(DatasetError, match="already registered"):
        register_coco_dataset(name, path, tmp_path)


def test_registering_the_same_files_again_does_nothing(write_json, dataset_name, tmp_path, monkeypatch):
    """A LazyConfig that registers its datasets runs more than once in a process (train_net.py loads it twice)."""
    path = write_json(_coco())
    name = dataset_name()
    colors = {"thing_colors": [[255, 0, 0], [0, 255, 0]]}
    register_coco_dataset(name, path, tmp_path / "images", metadata=colors)
    load = DatasetCatalog[name]
    assert len(DatasetCatalog.get(name)) == 2  # loading adds thing_classes to the metadata
    # the same files through a relative and an unnormalised path, and an equal (new) metadata dict
    monkeypatch.chdir(tmp_path)
    register_coco_dataset(name, "train.json", "images", metadata={"thing_colors": [[255, 0, 0], [0, 255, 0]]})
    register_coco_dataset(name, tmp_path / "images" / ".." / "train.json", f"{tmp_path}/./images/", metadata=colors)
    assert DatasetCatalog[name] is load
    meta = MetadataCatalog.get(name)
    assert (meta.json_file, meta.image_root, meta.thing_classes) == (
        str(path),
        str(tmp_path / "images"),
        ["cat", "dog"],
    )
    # validate_now still validates
    coco = _coco()
    coco["annotations"][0]["iscrowd"] = "no"
    write_json(coco)
    with pytest.raises(DatasetError, match="iscrowd='no' must be 0 or 1"):
        register_coco_dataset(name, path, tmp_path / "images", metadata=colors, validate_now=True)


def test_invalid_image_size_is_not_reported_as_box_outside(write_json):
    coco = _coco()
    coco["images"][0]["width"] = 0
    coco["images"][1].update(width=-40, height=float("nan"))
    coco["images"].append({"id": 3, "file_name": "c.png", "width": 40, "height": float("inf")})
    with pytest.raises(DatasetError) as info:
        validate_coco_json(write_json(coco))
    message = str(info.value)
    for expected in (
        "images[0] (id=1): invalid width=0 (must be a positive finite number)",
        "images[1] (id=2): invalid width=-40 (must be a positive finite number)",
        "images[1] (id=2): invalid height=nan (must be a positive finite number)",
        "images[2] (id=3): invalid height=inf (must be a positive finite number)",
    ):
        assert expected in message
    assert "outside" not in message and "4 problem(s)" in message


def test_json_the_parser_rejects_is_a_dataset_error(write_json):
    deep = write_json("[" * 100_000, "deep.json")
    with pytest.raises(DatasetError, match=re.escape(str(deep)) + ": invalid json: lists or objects nested too deeply"):
        validate_coco_json(deep)
    long_int = write_json('{"images": [], "categories": ' + "1" * 5000 + "}", "long.json")
    with pytest.raises(DatasetError, match=re.escape(str(long_int)) + ": invalid json: Exceeds the limit"):
        validate_coco_json(long_int)
    huge = _coco()
    huge["images"][0]["width"] = 10**400  # beyond the float range
    huge["annotations"][0]["bbox"] = [0, 0, 10**400, 1]
    with pytest.raises(DatasetError) as info:
        validate_coco_json(write_json(huge, "huge.json"))
    assert "images[0] (id=1): invalid width=1000000000" in str(info.value)
    assert "annotations[0] (id=1): bbox=[0, 0, 1000000000" in str(info.value) and "2 problem(s)" in str(info.value)


def test_read_image_checked(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.full((6, 5, 3), (10, 20, 30), np.uint8)).save(good)
    rgb, bgr = read_image_checked(good, "RGB"), read_image_checked(str(good), "BGR")
    assert rgb.shape == (6, 5, 3) and rgb[0, 0].tolist() == [10, 20, 30] and bgr[0, 0].tolist() == [30, 20, 10]

    missing = tmp_path / "missing.png"
    with pytest.raises(DatasetError, match="image file not found: " + re.escape(str(missing))):
        read_image_checked(missing, "RGB")

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"definitely not an image")
    with pytest.raises(DatasetError, match="cannot read image " + re.escape(str(garbage))):
        read_image_checked(garbage, "RGB")

    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(big)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(big.read_bytes()[:2000])
    with pytest.raises(DatasetError, match="cannot read image " + re.escape(str(truncated))):
        read_image_checked(truncated, "RGB")

    with pytest.raises(DatasetError, match=re.escape(str(tmp_path))):
        read_image_checked(tmp_path, "RGB")
