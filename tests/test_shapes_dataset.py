"""The built-in shapes dataset: determinism, COCO validity, boxes against pixels, size range, cache."""

import json
import multiprocessing
import os
import shutil

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from PIL import Image
from pycocotools.coco import COCO

import recursivedet.data.shapes as shapes
from recursivedet.data import DatasetError, ShapesConfig, ensure_shapes, register_shapes, render_shapes_image
from recursivedet.data.coco_register import validate_coco_json

SMALL = ShapesConfig(num_images=12, image_size=128, max_size=60, seed=3)


def _listing(root):
    """Names in a cache root, without the (empty, harmless) lock files."""
    return sorted(p.name for p in root.iterdir() if not p.name.endswith(".lock"))


def _read(folder):
    """(json bytes, {file name: pixel array}) of a generated dataset folder."""
    pixels = {p.name: np.asarray(Image.open(p)) for p in sorted((folder / "images").iterdir())}
    return (folder / "annotations.json").read_bytes(), pixels


def test_same_seed_same_bytes_and_pixels(tmp_path):
    a, b = ensure_shapes(SMALL, tmp_path / "a"), ensure_shapes(SMALL, tmp_path / "b")
    json_a, pix_a = _read(a)
    json_b, pix_b = _read(b)
    assert json_a == json_b
    assert pix_a.keys() == pix_b.keys() and len(pix_a) == SMALL.num_images
    for name in pix_a:
        np.testing.assert_array_equal(pix_a[name], pix_b[name])
        assert (a / "images" / name).read_bytes() == (b / "images" / name).read_bytes()

    other = ShapesConfig(**{**SMALL.__dict__, "seed": 4})
    json_c, pix_c = _read(ensure_shapes(other, tmp_path / "c"))
    assert json.loads(json_c)["annotations"] != json.loads(json_a)["annotations"]
    assert all(not np.array_equal(pix_a[n], pix_c[n]) for n in pix_a)


def test_coco_json_is_valid(tmp_path):
    folder = ensure_shapes(SMALL, tmp_path)
    coco = COCO(str(folder / "annotations.json"))
    assert sorted(c["name"] for c in coco.loadCats(coco.getCatIds())) == sorted(shapes.SHAPES_CLASSES)
    assert coco.getCatIds() == [1, 2, 3, 4]
    assert len(coco.getImgIds()) == SMALL.num_images and len(coco.getAnnIds()) > 0
    for img in coco.loadImgs(coco.getImgIds()):
        assert (img["width"], img["height"]) == (SMALL.image_size, SMALL.image_size)
        assert Image.open(folder / "images" / img["file_name"]).size == (img["width"], img["height"])
    for ann in coco.loadAnns(coco.getAnnIds()):
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0 and ann["area"] > 0 and ann["iscrowd"] == 0
        assert 0 <= x and 0 <= y and x + w <= SMALL.image_size and y + h <= SMALL.image_size
        assert ann["area"] <= w * h
        assert ann["category_id"] in (1, 2, 3, 4)
    validate_coco_json(folder / "annotations.json")  # the users' validator agrees


def test_boxes_match_drawn_pixels(tmp_path):
    folder = ensure_shapes(SMALL, tmp_path)
    saved = json.loads((folder / "annotations.json").read_text())
    for i in range(SMALL.num_images):
        r = render_shapes_image(SMALL, i)
        np.testing.assert_array_equal(r.image, np.asarray(Image.open(folder / "images" / f"{i:06d}.png")))
        in_json = [{k: a[k] for k in ("category_id", "bbox", "area")} for a in saved["annotations"]]
        in_json = [a for a, full in zip(in_json, saved["annotations"], strict=True) if full["image_id"] == i + 1]
        assert in_json == [{k: a[k] for k in ("category_id", "bbox", "area")} for a in r.annotations]
        assert r.instance_map.max() == len(r.annotations)
        for k, ann in enumerate(r.annotations, start=1):
            rows, cols = np.nonzero(r.instance_map == k)
            # Tight box around the object's visible pixels, in COCO's pixel-edge XYWH.
            x0, y0 = cols.min(), rows.min()
            assert ann["bbox"] == [x0, y0, cols.max() + 1 - x0, rows.max() + 1 - y0]
            assert ann["area"] == len(rows)
            # Those pixels carry the object's colour, up to the Gaussian noise (sigma <= 10).
            err = np.abs(r.image[rows, cols].astype(float) - np.clip(ann["color"], 0, 255))
            assert err.mean() < 10 and np.mean(err > 45) < 0.001


def test_default_distribution():
    config = ShapesConfig()
    rendered = [render_shapes_image(config, i) for i in range(80)]
    anns = [a for r in rendered for a in r.annotations]
    longer = np.array([max(a["bbox"][2:]) for a in anns])
    assert (longer < 32).any() and (longer > 96).any()
    assert longer.max() <= config.max_size and longer.min() >= 8
    assert {a["category_id"] for a in anns} == {1, 2, 3, 4}
    counts = [len(r.annotations) for r in rendered]
    assert 0 in counts  # about 5% of the images are empty
    assert all(c == 0 or 2 <= c <= 8 for c in counts) and np.mean(counts) > 4
    # Objects overlap: some pixels of a box belong to another object.
    assert any(
        np.any((r.instance_map[y : y + h, x : x + w] > 0) & (r.instance_map[y : y + h, x : x + w] != k))
        for r in rendered
        for k, a in enumerate(r.annotations, start=1)
        for x, y, w, h in [a["bbox"]]
    )
    # The val split (seed 1) shares no image with the train split (seed 0).
    val = ShapesConfig(num_images=100, seed=1)
    train_hashes = {r.image.tobytes() for r in rendered}
    assert not any(render_shapes_image(val, i).image.tobytes() in train_hashes for i in range(10))


def test_register_is_lazy_and_cache_is_reused(datasets_root, dataset_name, monkeypatch):
    name = dataset_name("shapes_small")
    register_shapes(name, SMALL)
    assert not datasets_root.exists()  # registration writes nothing
    meta = MetadataCatalog.get(name)
    folder = datasets_root / SMALL.dirname
    assert meta.json_file == str(folder / "annotations.json") and meta.image_root == str(folder / "images")
    assert meta.evaluator_type == "coco" and meta.thing_classes == list(shapes.SHAPES_CLASSES)

    dicts = DatasetCatalog.get(name)
    assert len(dicts) == SMALL.num_images
    assert dicts[0]["file_name"] == str(folder / "images" / "000000.png")
    assert {a["category_id"] for d in dicts for a in d["annotations"]} <= {0, 1, 2, 3}
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0, 2: 1, 3: 2, 4: 3}
    assert _listing(datasets_root) == [SMALL.dirname]  # no temporary folder left

    mtime = (folder / "annotations.json").stat().st_mtime_ns

    def fail(*args):
        raise AssertionError("regenerated")

    monkeypatch.setattr(shapes, "_write_dataset", fail)
    assert DatasetCatalog.get(name) == dicts
    assert (folder / "annotations.json").stat().st_mtime_ns == mtime

    with pytest.raises(DatasetError, match=name):
        register_shapes(name, SMALL)


def test_different_parameters_use_different_folders():
    names = {ShapesConfig(**{f: v}).dirname for f, v in [("seed", 1), ("num_images", 5), ("image_size", 128)]}
    names |= {ShapesConfig(**{f: v}).dirname for f, v in [("max_size", 60), ("empty_fraction", 0.0)]}
    assert len(names | {ShapesConfig().dirname}) == 6


def test_lost_race_keeps_the_winner(tmp_path, monkeypatch):
    """A process whose rename finds the folder already in place discards its own copy."""
    other = ensure_shapes(SMALL, tmp_path / "other")
    final = tmp_path / "datasets" / SMALL.dirname
    generated = []
    write = shapes._write_dataset

    def write_while_other_process_finishes(config, out):
        generated.append(out)
        write(config, out)
        shutil.copytree(other, final)  # lands between our generation and our rename

    monkeypatch.setattr(shapes, "_write_dataset", write_while_other_process_finishes)
    assert ensure_shapes(SMALL, tmp_path / "datasets") == final
    assert len(generated) == 1 and not generated[0].exists()  # generated, lost the rename, cleaned up
    assert _listing(final.parent) == [final.name]
    assert _read(final)[0] == _read(other)[0]


def test_incomplete_folder_is_reported(tmp_path):
    (tmp_path / SMALL.dirname / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match="incomplete dataset folder .*" + SMALL.dirname):
        ensure_shapes(SMALL, tmp_path)


def _generate_after_barrier(barrier, results, root):
    try:
        barrier.wait(timeout=60)  # start both generations at the same moment
        results.put(str(ensure_shapes(SMALL, root)))
    except BaseException as e:
        results.put(f"error: {e!r}")


@pytest.mark.slow
@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_concurrent_generation_ends_with_one_complete_cache(tmp_path, monkeypatch):
    # fork: the children start at once, without re-importing torch and detectron2.
    ctx = multiprocessing.get_context("fork")
    root, marks = tmp_path / "datasets", tmp_path / "generated"
    marks.mkdir()
    write = shapes._write_dataset
    monkeypatch.setattr(shapes, "_write_dataset", lambda c, out: ((marks / str(os.getpid())).touch(), write(c, out)))
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_generate_after_barrier, args=(barrier, results, root)) for _ in range(2)]
    for p in procs:
        p.start()
    outs = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    final = root / SMALL.dirname
    assert outs == [str(final)] * 2
    assert 1 <= len(list(marks.iterdir())) <= 2  # 1 with file locks, else usually 2 and one lost the rename
    assert _listing(root) == [SMALL.dirname]  # temporary copies removed
    assert (final / shapes._COMPLETE_MARKER).is_file()
    json_bytes, pixels = _read(final)
    monkeypatch.setattr(shapes, "_write_dataset", write)
    assert json_bytes == _read(ensure_shapes(SMALL, tmp_path / "reference"))[0]
    assert len(pixels) == SMALL.num_images
