"""Register users' own COCO-format datasets, with early and specific error messages.

Usage::

    from recursivedet.data import register_coco_dataset

    register_coco_dataset("mydata_train", "data/train.json", "data/train_images")
    # then e.g. dataloader.train.dataset.names = "mydata_train" in a config

The json is checked when the dataset is first loaded (``DatasetCatalog.get``), or at registration with
``validate_now=True``. Neither step reads images: a missing or corrupt image is reported, with its path,
when :func:`read_image_checked` first reads it.
"""

from __future__ import annotations

import io
import json
import math
import os
import re

import cv2
import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.data.detection_utils import convert_PIL_to_numpy
from detectron2.utils.file_io import PathManager
from PIL import Image

from recursivedet.errors import UserError

__all__ = ["DatasetError", "validate_coco_json", "register_coco_dataset", "read_image_checked"]

# Boxes may pass the image border by this many pixels: exporters often round coordinates outwards.
_BORDER_TOLERANCE = 1.0
# Problems listed in one error message; the rest are counted.
_MAX_LISTED = 10
# Longest value quoted in a message: a wrong value can be a whole list or object.
_MAX_SHOWN = 80


class DatasetError(UserError, ValueError):
    """A dataset file (annotation json or image) is missing, unreadable or inconsistent."""


def _is_number(v) -> bool:
    """True for a finite int or float (not a bool)."""
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    try:
        return math.isfinite(v)
    except OverflowError:  # an int beyond the float range: no coordinate is that large
        return False


def _show(v) -> str:
    """``repr(v)``, shortened when long."""
    text = repr(v)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


_INT = (int,)
_NUM = (int, float)
_ID = (int, str)  # COCO uses int ids; pycocotools and detectron2 accept str image ids too


def _is_id(v) -> bool:
    return isinstance(v, _ID) and not isinstance(v, bool)


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
                problems.append(f"{where} (id={_show(rec.get('id'))}) has no {field!r}")
            elif not isinstance(rec[field], typ) or isinstance(rec[field], bool):
                kind = " or ".join(t.__name__ for t in typ)
                problems.append(f"{where} (id={_show(rec.get('id'))}): {field}={_show(rec[field])} is not {kind}")
        if _is_id(rec.get("id")):  # other types are reported above (and may not be hashable)
            if rec["id"] in by_id:
                problems.append(f"{where}: id={_show(rec['id'])} is used twice in {key!r}")
            by_id[rec["id"]] = rec
    return problems, by_id


def _load_json(json_file: str):
    """Parse ``json_file``; every failure is a :class:`DatasetError` naming the file."""
    if not os.path.isfile(json_file):
        raise DatasetError(f"annotation file not found: {json_file}")
    try:
        with open(json_file, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetError(f"{json_file}: invalid json at line {e.lineno} column {e.colno}: {e.msg}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read annotation file {json_file}: {e}") from e
    except RecursionError as e:
        raise DatasetError(f"{json_file}: invalid json: lists or objects nested too deeply") from e
    except ValueError as e:  # Python refuses integers of more than 4300 digits
        raise DatasetError(f"{json_file}: invalid json: {e}") from e


def _image_size_problems(coco: dict) -> tuple[list[str], set]:
    """Problems of images whose width or height is a number but not a positive finite one, and their ids.

    Other types are reported by :func:`_check_records`.
    """
    problems, invalid = [], set()
    for i, img in enumerate(coco["images"] if isinstance(coco["images"], list) else []):
        if not isinstance(img, dict):
            continue
        for key in ("width", "height"):
            v = img.get(key)
            if isinstance(v, _NUM) and not isinstance(v, bool) and not (_is_number(v) and v > 0):
                problems.append(
                    f"images[{i}] (id={_show(img.get('id'))}): invalid {key}={_show(v)} "
                    "(must be a positive finite number)"
                )
                if _is_id(img.get("id")):
                    invalid.add(img["id"])
    return problems, invalid


def _duplicate_category_names(coco: dict) -> list[str]:
    """Two categories with one name would get one label in the evaluation and the visualisations."""
    problems, first_id = [], {}
    for i, cat in enumerate(coco["categories"] if isinstance(coco["categories"], list) else []):
        if not isinstance(cat, dict) or not isinstance(cat.get("name"), str):
            continue
        name = cat["name"]
        if name in first_id:
            problems.append(
                f"categories[{i}] (id={_show(cat.get('id'))}): name={_show(name)} is also the name of "
                f"id={_show(first_id[name])}"
            )
        else:
            first_id[name] = cat.get("id")
    return problems


def validate_coco_json(json_file: str | os.PathLike) -> dict:
    """Check a COCO detection json and return its parsed content.

    Raises :class:`DatasetError` naming ``json_file`` (and the offending key, id and value) when the file is
    missing or not valid json, has no ``images`` or no ``categories``, two categories with one name, an image
    whose width or height is not a positive number, or an annotation whose image_id or category_id is
    unknown, whose ``iscrowd`` is not 0 or 1, or whose box is degenerate (w or h <= 0) or extends outside its
    image. Images are not read.
    """
    json_file = os.fspath(json_file)
    coco = _load_json(json_file)
    if not isinstance(coco, dict):
        raise DatasetError(f"{json_file}: top level must be a json object, got {type(coco).__name__}")
    for key in ("images", "categories"):
        if key not in coco:
            raise DatasetError(f"{json_file}: no {key!r} key (a COCO detection json needs 'images' and 'categories')")
    if coco["categories"] == []:
        raise DatasetError(f"{json_file}: 'categories' is empty")
    if coco["images"] == []:
        raise DatasetError(f"{json_file}: 'images' is empty: the dataset has no images")

    problems, categories = _check_records(coco, "categories", {"id": _INT, "name": (str,)})
    problems += _duplicate_category_names(coco)
    p, images = _check_records(coco, "images", {"id": _ID, "file_name": (str,), "width": _NUM, "height": _NUM})
    problems += p
    p, bad_size = _image_size_problems(coco)
    problems += p
    # A json without 'annotations' (e.g. a test split) is valid COCO.
    anns = coco.get("annotations", [])
    if "annotations" in coco:
        ann_fields = {"id": _INT, "image_id": _ID, "category_id": _INT, "bbox": (list,)}
        problems += _check_records(coco, "annotations", ann_fields)[0]

    for i, ann in enumerate(anns if isinstance(anns, list) else []):
        if not isinstance(ann, dict):
            continue
        where = f"annotations[{i}] (id={_show(ann.get('id'))})"
        image_id = ann.get("image_id") if _is_id(ann.get("image_id")) else None
        if image_id is not None and image_id not in images:
            problems.append(f"{where}: image_id={_show(image_id)} is not an id in 'images'")
        if _is_id(ann.get("category_id")) and ann["category_id"] not in categories:
            problems.append(f"{where}: category_id={_show(ann['category_id'])} is not an id in 'categories'")
        if ann.get("ignore", 0):
            problems.append(f"{where}: 'ignore'={_show(ann['ignore'])} is not supported (detectron2 rejects it)")
        # detectron2 drops crowd regions by `iscrowd == 0`: any other value would silently drop or keep a box.
        if "iscrowd" in ann and (type(ann["iscrowd"]) is not int or ann["iscrowd"] not in (0, 1)):
            problems.append(f"{where}: iscrowd={_show(ann['iscrowd'])} must be 0 or 1")
        box = ann.get("bbox")
        if not isinstance(box, list):
            continue
        if len(box) != 4 or not all(_is_number(v) for v in box):
            problems.append(f"{where}: bbox={_show(box)} must be 4 finite numbers [x, y, w, h]")
            continue
        x, y, w, h = box
        if w <= 0 or h <= 0:
            problems.append(f"{where}: degenerate bbox={box!r} (w and h must be > 0)")
            continue
        img = images.get(image_id) if image_id is not None and image_id not in bad_size else None
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


def _same_value(a, b) -> bool:
    """``a == b`` for metadata values, numpy arrays included (their ``==`` is element-wise)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    try:
        return bool(a == b)
    except Exception:  # values whose comparison is not a truth value (e.g. lists of arrays): call them different
        return False


def _same_metadata(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(_same_value(a[k], b[k]) for k in a)


# Attribute of the loader function registered by register_coco_dataset: (json_file, image_root, metadata) as
# normalised absolute paths and a copy of the metadata, to recognise the same registration made again.
_REGISTRATION_ATTR = "_recursivedet_coco_registration"


def _existing_registration(name: str) -> tuple[str, str, dict] | None:
    """The arguments :func:`register_coco_dataset` registered ``name`` with, if it still is registered so."""
    if name not in DatasetCatalog.list() or name not in MetadataCatalog.list():
        return None
    registration = getattr(DatasetCatalog[name], _REGISTRATION_ATTR, None)
    meta = MetadataCatalog.get(name)
    # Someone replaced the metadata: this is no longer the registration we made.
    if registration is None or meta.get("json_file") is None or meta.get("image_root") is None:
        return None
    if (os.path.abspath(meta.json_file), os.path.abspath(meta.image_root)) != registration[:2]:
        return None
    return registration


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
    changes), and also right away when ``validate_now`` is true.

    Registering ``name`` again with the same json, image folder (compared as absolute paths) and metadata
    does nothing: a LazyConfig file that registers its datasets is executed more than once in one process
    (``train_net.py`` loads it to check the overrides, then again to run). Raises :class:`DatasetError` if
    ``name`` is already registered otherwise.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    metadata = dict(metadata or {})
    wanted = (os.path.abspath(json_file), os.path.abspath(image_root), metadata)
    existing = _existing_registration(name)
    if existing is not None:
        if existing[:2] == wanted[:2] and _same_metadata(existing[2], metadata):
            if validate_now:
                validate_coco_json(json_file)
            return
        differs = [
            f"its {what} is {old}, not {new}"
            for what, old, new in (("json_file", existing[0], wanted[0]), ("image_root", existing[1], wanted[1]))
            if old != new
        ] or [f"its metadata is {_show(existing[2])}, not {_show(metadata)}"]
        raise DatasetError(
            f"dataset name {name!r} is already registered (registering {json_file}): {' and '.join(differs)}; "
            "register different data under another name"
        )
    check_name_free(name, json_file)
    if validate_now:
        validate_coco_json(json_file)
    register_coco_instances(name, dict(metadata), json_file, image_root)
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

    setattr(load, _REGISTRATION_ATTR, wanted)
    DatasetCatalog.register(name, load)


# ---- images --------------------------------------------------------------------------------------------------

_EXIF_ORIENTATION = 274
_EXIF_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# PIL modes of one unsigned 16-bit channel.
_UINT16_GRAY_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}
# PIL's raw (file) modes of unsigned 16-bit samples, e.g. "I;16B", "RGB;16B" (PNG) or "RGB;16N" (TIFF).
_UINT16_RAWMODE = re.compile(r"[A-Z]+;16[BLN]?")
# Modes without a defined 0-255 range (PIL's conversion clips them to it), with what they hold.
_WIDE_MODES = {"I": "32-bit integer", "F": "32-bit float"}


def _rawmode(image: Image.Image) -> str:
    """How the file stores its samples (e.g. "RGB;16B"), read before the pixels are loaded; "" if unknown."""
    tile = getattr(image, "tile", None)
    if not tile:
        return ""
    args = tile[0][3]
    if isinstance(args, tuple | list):
        args = args[0] if args else ""
    return args if isinstance(args, str) else ""


def _uint16_to_uint8(values: np.ndarray) -> np.ndarray:
    """0-65535 to 0-255, rounded: ``round(v / 257)`` (257 * 255 = 65535, so the full range maps to the full
    range and 257 * k to k)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _exif_transposed(source: Image.Image, image: Image.Image) -> Image.Image:
    """``image`` turned as ``source``'s EXIF orientation says (detectron2's ``read_image`` does the same)."""
    try:
        orientation = source.getexif().get(_EXIF_ORIENTATION)
    except Exception:  # a malformed EXIF block: show the image as stored, like detectron2
        return image
    method = _EXIF_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    return image.transpose(method) if method is not None else image


def _to_8bit(image: Image.Image, data: bytes, file_name: str) -> Image.Image:
    """``image`` with 8-bit samples: 16-bit images scaled by 1/257; an 8-bit image as it is.

    PIL's own conversion clips 16-bit grey at 255 (a white image) and keeps only the high byte of 16-bit
    colour, hence the explicit scaling. 32-bit integer and float images have no defined range: refused.
    """
    mode, rawmode = image.mode, _rawmode(image)
    if mode in _UINT16_GRAY_MODES or (mode == "I" and rawmode in _UINT16_GRAY_MODES):  # "I": older Pillow's PNG
        return Image.fromarray(_uint16_to_uint8(np.asarray(image)))
    if mode in _WIDE_MODES or mode.startswith("I;"):
        what = _WIDE_MODES.get(mode, "signed 16-bit integer" if mode.endswith("S") else "high bit depth")
        raise DatasetError(
            f"cannot read image {file_name}: PIL mode {mode!r} ({what} pixels) has no defined 0-255 range; "
            "save the image with 8-bit or 16-bit unsigned samples (e.g. PNG)"
        )
    if mode in ("RGB", "RGBA") and _UINT16_RAWMODE.fullmatch(rawmode):
        image.load()  # a truncated or corrupt file fails here, with PIL's message
        # PIL has no 16-bit colour modes; OpenCV decodes the 16-bit samples (BGR or BGRA; grey+alpha as BGRA).
        wide = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        channels = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGBA}
        if (
            wide is not None
            and wide.dtype == np.uint16
            and wide.ndim == 3
            and wide.shape[:2] == (image.height, image.width)
            and wide.shape[2] == len(mode)
        ):
            return Image.fromarray(_uint16_to_uint8(cv2.cvtColor(wide, channels[wide.shape[2]])))
        # Otherwise PIL's reading (the high byte of each sample) is within one grey level of the scaling.
    return image


def read_image_checked(file_name: str | os.PathLike, format: str | None = None) -> np.ndarray:
    """``detectron2.data.detection_utils.read_image`` that raises :class:`DatasetError` naming the path, and
    reads 16-bit images correctly.

    Returns an (H, W, C) uint8 array in ``format`` ("RGB", "BGR", "L", ...; None keeps the file's mode, a grey
    image as (H, W)), EXIF orientation applied. 16-bit images (grey "I;16", colour PNG/TIFF) are scaled to
    0-255 by 1/257 (full range to full range); 32-bit integer or float images are refused with a
    :class:`DatasetError`.
    """
    file_name = os.fspath(file_name)
    try:
        with PathManager.open(file_name, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise DatasetError(f"image file not found: {file_name}") from e
    except IsADirectoryError as e:
        raise DatasetError(f"image path is a directory: {file_name}") from e
    except OSError as e:
        raise DatasetError(f"cannot read image {file_name}: {type(e).__name__}: {e}") from e
    try:
        source = Image.open(io.BytesIO(data))
        image = _exif_transposed(source, _to_8bit(source, data, file_name))
        return convert_PIL_to_numpy(image, format)
    except DatasetError:
        raise
    except Exception as e:  # PIL raises OSError, UnidentifiedImageError, SyntaxError, ValueError...
        raise DatasetError(f"cannot read image {file_name}: {type(e).__name__}: {e}") from e
