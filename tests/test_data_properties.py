"""Properties of the data path on generated inputs (hypothesis, derandomized: the same examples every run).

- ``validate_coco_json`` on any file content (json around the COCO structure, or arbitrary bytes) returns or
  raises ``DatasetError`` naming the file; nothing else escapes.
- The training mapper (the demo config's augmentations, with and without its crop, and the COCO recipe's
  with the crop, on small images) keeps every box finite and inside the output image, keeps each kept box's
  class, and drops only boxes the augmentations left (nearly) empty.
- Any image file (arbitrary or truncated bytes, 8/16-bit grey, RGB, RGBA) is read with the expected 8-bit
  values or raises ``DatasetError`` naming its path.
"""

import functools
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recursivedet.data import DatasetError, read_image_checked, validate_coco_json
from recursivedet.data.mapper import DetectionMapper, train_augmentations

REPO = Path(__file__).resolve().parents[1]


def examples(n: int):
    """Settings of a property test: ``n`` examples, the same ones on every run, no example database written."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(scope="module")
def work_dir(tmp_path_factory) -> Path:
    """One folder for a test's generated files (function-scoped tmp_path would be shared by all examples)."""
    return tmp_path_factory.mktemp("properties")


# ---- validate_coco_json -------------------------------------------------------------------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=4)
)
_ANY_JSON = st.recursive(
    _SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4),
    max_leaves=8,
)
_NUMBER = st.integers(-2, 100) | st.floats(-2, 100) | st.sampled_from([0, 0.0, -0.0, math.nan, math.inf, 10**400])
# Values near what COCO expects, so that the checks past the type checks are reached too.
_PLAUSIBLE = {
    "id": st.integers(0, 3),
    "image_id": st.integers(0, 3) | st.sampled_from(["1", "a"]),
    "category_id": st.integers(0, 3),
    "file_name": st.sampled_from(["a.png", ""]),
    "name": st.sampled_from(["cat", "dog"]),
    "width": _NUMBER,
    "height": _NUMBER,
    "bbox": st.lists(_NUMBER, min_size=3, max_size=5),
    "iscrowd": st.sampled_from([0, 1, 2, True, "yes", 1.0]),
    "ignore": st.sampled_from([0, 1]),
    "area": _NUMBER,
}
_IMAGE_FIELDS = ["id", "file_name", "width", "height"]
_CATEGORY_FIELDS = ["id", "name"]
_ANNOTATION_FIELDS = ["id", "image_id", "category_id", "bbox"]
_ANNOTATION_EXTRAS = ["iscrowd", "ignore", "area"]


def _shaped_record(fields: list[str], extras: tuple[str, ...] = ()):
    """A record with COCO's fields and plausible values, sometimes one field replaced by any json value."""
    record = st.fixed_dictionaries(
        {f: _PLAUSIBLE[f] for f in fields}, optional={f: _PLAUSIBLE[f] for f in extras} | {"extra": _ANY_JSON}
    )
    broken = st.tuples(record, st.sampled_from(fields), _ANY_JSON).map(lambda t: {**t[0], t[1]: t[2]})
    return record | record | broken


def _loose_record(fields: list[str]):
    """Any subset of COCO's fields with plausible or any values, or not a record at all."""
    optional = {f: _PLAUSIBLE[f] | _ANY_JSON for f in fields} | {"extra": _ANY_JSON}
    return st.fixed_dictionaries({}, optional=optional) | _SCALARS


_COCO_SHAPED = st.fixed_dictionaries(
    {
        "images": st.lists(_shaped_record(_IMAGE_FIELDS), min_size=1, max_size=3),
        "categories": st.lists(_shaped_record(_CATEGORY_FIELDS), min_size=1, max_size=3),
        "annotations": st.lists(_shaped_record(_ANNOTATION_FIELDS, tuple(_ANNOTATION_EXTRAS)), max_size=4),
    }
)
_COCO_LOOSE = st.fixed_dictionaries(
    {},
    optional={
        "images": st.lists(_loose_record(_IMAGE_FIELDS), max_size=3) | _ANY_JSON,
        "categories": st.lists(_loose_record(_CATEGORY_FIELDS), max_size=3) | _ANY_JSON,
        "annotations": st.lists(_loose_record(_ANNOTATION_FIELDS + _ANNOTATION_EXTRAS), max_size=4) | _ANY_JSON,
        "info": _ANY_JSON,
    },
)


def _json_text(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


# Mostly COCO-shaped files (so that the checks past the structure are reached), loosely shaped ones, others.
_COCO_LIKE = st.one_of(_COCO_SHAPED, _COCO_SHAPED, _COCO_SHAPED, _COCO_LOOSE)
_FILE_CONTENT = st.one_of(
    _COCO_LIKE.map(_json_text),
    _COCO_LIKE.map(_json_text),
    _COCO_LIKE.map(_json_text),
    _ANY_JSON.map(_json_text),
    st.binary(max_size=200),
    st.tuples(_COCO_LIKE.map(_json_text), st.integers(0, 400)).map(lambda t: t[0][: t[1]]),  # truncated
    st.sampled_from([b"[" * 50_000, b'{"images": ' + b"9" * 5000 + b"}", b"\xef\xbb\xbf{}", b"\xff\xfe{}"]),
)


@examples(250)
@given(content=_FILE_CONTENT)
def test_validator_returns_or_raises_a_dataset_error_naming_the_file(work_dir, content):
    path = work_dir / "annotations.json"
    path.write_bytes(content)
    try:
        coco = validate_coco_json(path)
    except DatasetError as e:
        assert str(path) in str(e)
    else:
        assert isinstance(coco, dict) and isinstance(coco["images"], list) and coco["images"]
        assert isinstance(coco["categories"], list) and coco["categories"]


# ---- the training mapper --------------------------------------------------------------------------------------


@functools.cache
def _demo_augmentations(random_crop: bool) -> list:
    cfg = LazyConfig.load(str(REPO / "projects/SparseRCNN/configs/recursivedet_shapes_demo.py"))
    cfg.dataloader.train.mapper.augmentations.random_crop = random_crop
    return instantiate(cfg.dataloader.train.mapper.augmentations)


AUGMENTATIONS = {
    "demo": lambda: _demo_augmentations(False),
    "demo_crop": lambda: _demo_augmentations(True),
    "coco_crop": lambda: train_augmentations(random_crop=True, crop_prob=0.75),
}


@st.composite
def _box(draw, w: int, h: int) -> list[float]:
    """An XYXY box of positive size inside a w x h image: anywhere, tiny, or touching a border."""
    coords = []
    for size in (w, h):
        extent = draw(st.sampled_from([1e-3, 0.01, 0.5, 1.0, size]) | st.floats(1e-3, size))
        extent = min(extent, size)
        start = draw(st.sampled_from([0.0, size - extent]) | st.floats(0, size - extent))
        coords.append((start, min(start + extent, size)))
    (x0, x1), (y0, y1) = coords
    return [x0, y0, x1, y1]


@st.composite
def _sample(draw):
    """(image of h x w, annotations): each box has its own class (its index) and some are crowd regions."""
    short = draw(st.integers(1, 40))
    long = draw(st.integers(short, 4 * short))
    h, w = (short, long) if draw(st.booleans()) else (long, short)
    boxes = draw(st.lists(_box(w, h), min_size=0, max_size=6))
    crowd = draw(st.lists(st.booleans(), min_size=len(boxes), max_size=len(boxes)))
    image = draw(st.integers(0, 2**31)).to_bytes(4, "little")  # seed of the pixels
    pixels = np.random.default_rng(int.from_bytes(image, "little")).integers(0, 256, (h, w, 3), dtype=np.uint8)
    annotations = [
        {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": i, "iscrowd": int(c)}
        for i, (b, c) in enumerate(zip(boxes, crowd, strict=True))
    ]
    return pixels, annotations


@pytest.mark.parametrize("augmentations", sorted(AUGMENTATIONS))
@examples(50)
@given(sample=_sample(), seed=st.integers(0, 2**32 - 1))
def test_augmented_boxes_are_finite_inside_and_keep_their_class(work_dir, augmentations, sample, seed):
    pixels, annotations = sample
    path = work_dir / f"{augmentations}.png"
    assert cv2.imwrite(str(path), pixels)
    h, w = pixels.shape[:2]
    mapper = DetectionMapper(True, augmentations=AUGMENTATIONS[augmentations]())
    d = {"file_name": str(path), "image_id": 1, "height": h, "width": w, "annotations": annotations}

    np.random.seed(seed)
    out = mapper(d)
    image, instances = out["image"], out["instances"]
    out_h, out_w = image.shape[1:]
    assert image.dtype == torch.uint8 and image.shape[0] == 3 and min(out_h, out_w) >= 1
    assert instances.image_size == (out_h, out_w)
    boxes, classes = instances.gt_boxes.tensor, instances.gt_classes.tolist()
    assert torch.isfinite(boxes).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= out_w).all() and (boxes[:, 3] <= out_h).all()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
    assert classes == sorted(set(classes))  # each box once, in the original order
    assert all(annotations[k]["iscrowd"] == 0 for k in classes)

    # The same random draws give the transforms the mapper applied: where each original box must have gone.
    np.random.seed(seed)
    transforms = mapper.augmentations(T.AugInput(pixels[..., ::-1].copy()))
    for k, a in enumerate(annotations):
        if a["iscrowd"]:
            continue
        moved = transforms.apply_box(np.array([a["bbox"]], dtype=np.float64))[0]
        expected = np.minimum(moved.clip(min=0), [out_w, out_h, out_w, out_h])
        size = min(expected[2] - expected[0], expected[3] - expected[1])
        if k in classes:
            got = boxes[classes.index(k)].double().numpy()
            assert np.allclose(got, expected, rtol=1e-5, atol=1e-3), (k, got, expected)
        else:
            assert size < 1e-3, (k, expected)  # dropped only when the augmentations emptied it


# ---- image files ----------------------------------------------------------------------------------------------


def _expected_8bit(values: np.ndarray) -> np.ndarray:
    """8-bit reading of an image array as OpenCV wrote it (BGR(A) or grey): RGB, 16-bit as round(v / 257)."""
    if values.dtype == np.uint16:
        values = np.floor(values.astype(np.float64) / 257 + 0.5).astype(np.uint8)
    if values.ndim == 2:
        return np.repeat(values[..., None], 3, axis=2)
    return values[..., 2::-1]  # BGR(A) -> RGB, alpha dropped


@st.composite
def _image_array(draw) -> np.ndarray:
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    channels = draw(st.sampled_from([None, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16]))
    shape = (h, w) if channels is None else (h, w, channels)
    seed = draw(st.integers(0, 2**31))
    values = np.random.default_rng(seed).integers(0, np.iinfo(dtype).max + 1, shape, dtype=np.int64)
    return values.astype(dtype)


def _encoded(values: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", values)
    assert ok
    return data.tobytes()


_IMAGE_FILES = (
    _image_array().map(lambda a: ("valid", a, _encoded(a)))
    | st.tuples(_image_array(), st.integers(0, 2000)).map(lambda t: ("broken", None, _encoded(t[0])[: t[1]]))
    | st.binary(max_size=300).map(lambda b: ("broken", None, b))
    | st.sampled_from([b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"II*\x00", b"BM"]).flatmap(
        lambda magic: st.binary(max_size=200).map(lambda b: ("broken", None, magic + b))
    )
)


@examples(150)
@given(file=_IMAGE_FILES)
def test_image_files_load_with_the_expected_values_or_name_the_path(work_dir, file):
    kind, values, data = file
    path = work_dir / "image.png"
    path.write_bytes(data)
    mapper = DetectionMapper(False, augmentations=[])
    try:
        out = mapper({"file_name": str(path), "image_id": 1})
    except DatasetError as e:
        assert kind == "broken", e
        assert str(path) in str(e)
        return
    image = out["image"]
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    assert (out["height"], out["width"]) == tuple(image.shape[1:])
    if kind == "valid":
        assert np.array_equal(image.permute(1, 2, 0).numpy(), _expected_8bit(values))
        assert np.array_equal(read_image_checked(path, "BGR"), _expected_8bit(values)[..., ::-1])
