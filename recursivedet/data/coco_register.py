"""Register users' own COCO-format datasets, with early and specific error messages.

Usage::

    from recursivedet.data import register_coco_dataset

    register_coco_dataset("mydata_train", "data/train.json", "data/train_images")
    # then e.g. DATASETS.TRAIN = ("mydata_train",) in a config

The json is checked when the dataset is first loaded (``DatasetCatalog.get``), or at registration with
``validate_now=True``. Neither step reads images: a missing or corrupt image is reported, with its path,
when :func:`read_image_checked` first reads it.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import read_image

from recursivedet.errors import UserError

__all__ = ["DatasetError", "validate_coco_json", "register_coco_dataset", "read_image_checked"]

# Boxes may pass the image border by this many pixels: exporters often round coordinates outwards.
_BORDER_TOLERANCE = 1.0
# Problems listed in one error message; the rest are counted.
_MAX_LISTED = 10


class DatasetError(UserError, ValueError):
    """A dataset file (annotation json or image) is missing, unreadable or inconsistent."""


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


_INT = (int,)
_NUM = (int, float)
_ID = (int, str)  # COCO uses int ids; pycocotools and detectron2 accept str image ids too


def _check_records(coco: dict, key: str, required: dict[str, tuple]) -> tuple[list[str], dict]:
    """Check ``coco[key]`` is a list of dicts with ``required`` fields (name -> allowed types) and unique ids.

    Returns the problems found and a map id -> record.
    """
    problems, by_id = [], {}
    records = coco.get(key)
    if not isinstance(records, list):
        return [f"key {key!r} must be a list, got {type(records).__name__}"], by_id
    for i, rec in enumerate(records):
        where = f"{key}[{i}]"
        if not isinstance(rec, dict):
            problems.append(f"{where} must be an object, got {type(rec).__name__}")
            continue
        for field, typ in required.items():
            if field not in rec:
                problems.append(f"{where} (id={rec.get('id')!r}) has no {field!r}")
            elif not isinstance(rec[field], typ) or isinstance(rec[field], bool):
                kind = " or ".join(t.__name__ for t in typ)
                problems.append(f"{where} (id={rec.get('id')!r}): {field}={rec[field]!r} is not {kind}")
        if isinstance(rec.get("id"), _ID):  # other types are reported above (and may not be hashable)
            if rec["id"] in by_id:
                problems.append(f"{where}: id={rec['id']!r} is used twice in {key!r}")
            by_id[rec["id"]] = rec
    return problems, by_id


def validate_coco_json(json_file: str | os.PathLike) -> dict:
    """Check a COCO detection json and return its parsed content.

    Raises :class:`DatasetError` naming ``json_file`` (and the offending key, id and value) when the file is
    missing or not valid json, has no ``categories``, or has an annotation whose image_id or category_id is
    unknown, whose box is degenerate (w or h <= 0) or extends outside its image. Images are not read.
    """
    json_file = os.fspath(json_file)
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            coco = json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_file}: invalid json at line {e.lineno} column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read annotation file {json_file}: {e}") from e
    if not isinstance(coco, dict):
        raise DatasetError(f"{json_file}: top level must be a json object, got {type(coco).__name__}")
    for key in ("images", "categories"):
        if key not in coco:
            raise DatasetError(f"{json_file}: no {key!r} key (a COCO detection json needs 'images' and 'categories')")
    if not coco["categories"]:
        raise DatasetError(f"{json_file}: 'categories' is empty")

    problems, categories = _check_records(coco, "categories", {"id": _INT, "name": (str,)})
    p, images = _check_records(coco, "images", {"id": _ID, "file_name": (str,), "width": _NUM, "height": _NUM})
    problems += p
    # A json without 'annotations' (e.g. a test split) is valid COCO.
    anns = coco.get("annotations", [])
    if "annotations" in coco:
        ann_fields = {"id": _INT, "image_id": _ID, "category_id": _INT, "bbox": (list,)}
        problems += _check_records(coco, "annotations", ann_fields)[0]

    for i, ann in enumerate(anns if isinstance(anns, list) else []):
        if not isinstance(ann, dict):
            continue
        where = f"annotations[{i}] (id={ann.get('id')!r})"
        if isinstance(ann.get("image_id"), _ID) and ann["image_id"] not in images:
            problems.append(f"{where}: image_id={ann['image_id']!r} is not an id in 'images'")
        if isinstance(ann.get("category_id"), _ID) and ann["category_id"] not in categories:
            problems.append(f"{where}: category_id={ann['category_id']!r} is not an id in 'categories'")
        if ann.get("ignore", 0):
            problems.append(f"{where}: 'ignore'={ann['ignore']!r} is not supported (detectron2 rejects it)")
        box = ann.get("bbox")
        if not isinstance(box, list):
            continue
        if len(box) != 4 or not all(_is_number(v) for v in box):
            problems.append(f"{where}: bbox={box!r} must be 4 finite numbers [x, y, w, h]")
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            problems.append(f"{where}: degenerate bbox={box!r} (w and h must be > 0)")
            continue
        img = images.get(ann["image_id"]) if isinstance(ann.get("image_id"), _ID) else None
        if img is None or not all(_is_number(img.get(k)) for k in ("width", "height")):
            continue
        t = _BORDER_TOLERANCE
        if x < -t or y < -t or x + w > img["width"] + t or y + h > img["height"] + t:
            problems.append(
                f"{where}: bbox={box!r} (xywh) lies outside its image id={img['id']!r} "
                f"of width={img['width']} height={img['height']}"
            )

    if problems:
        more = f"\n  ... and {len(problems) - _MAX_LISTED} more" if len(problems) > _MAX_LISTED else ""
        listed = "\n  ".join(problems[:_MAX_LISTED])
        raise DatasetError(f"{json_file}: {len(problems)} problem(s):\n  {listed}{more}")
    return coco


def check_name_free(name: str, json_file: str) -> None:
    """Raise :class:`DatasetError` if dataset ``name`` (about to be registered for ``json_file``) is taken."""
    # Metadata left by an earlier registration would make detectron2 fail with a bare AssertionError.
    if name in DatasetCatalog.list() or (name in MetadataCatalog.list() and MetadataCatalog.get(name).get("json_file")):
        raise DatasetError(f"dataset name {name!r} is already registered (registering {json_file})")


def register_coco_dataset(
    name: str,
    json_file: str | os.PathLike,
    image_root: str | os.PathLike,
    metadata: dict | None = None,
    validate_now: bool = False,
) -> None:
    """Register a COCO-format json and its image folder as dataset ``name`` (boxes only are needed).

    Same as detectron2's ``register_coco_instances`` (metadata ``json_file``, ``image_root``,
    ``evaluator_type="coco"``; ``thing_classes`` once loaded), plus checks: the json is validated by
    :func:`validate_coco_json` on the first load through ``DatasetCatalog.get(name)`` (again if the file
    changes), and also right away when ``validate_now`` is true. Raises :class:`DatasetError` if ``name`` is
    already registered.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    check_name_free(name, json_file)
    if validate_now:
        validate_coco_json(json_file)
    register_coco_instances(name, dict(metadata or {}), json_file, image_root)
    load_unchecked = DatasetCatalog.pop(name)
    validated = []  # (mtime, size) of the json last validated: large files are not re-checked on every load

    def load() -> list[dict]:
        try:
            st = os.stat(json_file)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp is None or stamp not in validated:
            validate_coco_json(json_file)
            validated[:] = [stamp]
        return load_unchecked()

    DatasetCatalog.register(name, load)


def read_image_checked(file_name: str | os.PathLike, format: str | None = None) -> np.ndarray:
    """``detectron2.data.detection_utils.read_image`` that raises :class:`DatasetError` naming the path.

    Returns an (H, W, C) uint8 array in ``format`` ("RGB", "BGR", ...; None keeps the file's mode).
    """
    file_name = os.fspath(file_name)
    try:
        return read_image(file_name, format)
    except FileNotFoundError as e:
        raise DatasetError(f"image file not found: {file_name}") from e
    except IsADirectoryError as e:
        raise DatasetError(f"image path is a directory: {file_name}") from e
    except Exception as e:  # PIL raises OSError, UnidentifiedImageError, SyntaxError, ValueError...
        raise DatasetError(f"cannot read image {file_name}: {type(e).__name__}: {e}") from e
