"""Built-in procedurally generated detection dataset ("shapes") in COCO format.

Each image is ``image_size`` x ``image_size`` RGB with 3-8 filled shapes (rectangle, circle, triangle,
ellipse; 12-120 px) on a cluttered background: smooth colour gradients, random lines and curves, specks and
Gaussian noise. About 5% of the images have no object. Shape masks come from
``skimage.draw.random_shapes``, one shape per call, so that every object's box and area are computed from
the pixels of that object that stay visible once all later shapes are drawn.

The datasets ``shapes_train`` (1000 images, seed 0) and ``shapes_val`` (100 images, seed 1) are registered
when :mod:`recursivedet` is imported. Their images are generated on the first ``DatasetCatalog.get`` call
into ``$RECURSIVEDET_DATASETS`` (default ``~/.cache/recursivedet/datasets``), in a folder named after the
parameters, and reused afterwards (set ``RECURSIVEDET_DATASETS`` before importing :mod:`recursivedet`: the
folder is fixed at registration). Other sizes or seeds::

    from recursivedet.data import ShapesConfig, register_shapes

    register_shapes("shapes_tiny", ShapesConfig(num_images=50, image_size=128, max_size=60, seed=7))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from iopath.common.file_io import file_lock
from PIL import Image
from scipy import ndimage
from skimage import draw

from recursivedet.data.coco_register import DatasetError, check_name_free

__all__ = [
    "SHAPES_CLASSES",
    "ShapesConfig",
    "RenderedImage",
    "datasets_root",
    "render_shapes_image",
    "shapes_dir",
    "ensure_shapes",
    "register_shapes",
    "register_builtin_shapes",
]

# Category names as random_shapes calls them; COCO category id = index + 1.
SHAPES_CLASSES = ("rectangle", "circle", "triangle", "ellipse")

# Bump when the generator's output changes, so that old caches are not mistaken for new ones.
_FORMAT_VERSION = 1
_COMPLETE_MARKER = "COMPLETE"
_JSON_NAME = "annotations.json"
_IMAGE_DIR = "images"


@dataclass(frozen=True)
class ShapesConfig:
    """Parameters of a shapes dataset; sizes are in pixels.

    ``min_size``/``max_size`` bound the extent of a shape's longer side (a shape cut by the image border or
    by a later shape has a smaller box). ``max_occlusion`` is the largest fraction of an
    object that later shapes may cover; shapes that would hide more are placed elsewhere.
    """

    num_images: int = 1000
    image_size: int = 256
    seed: int = 0
    min_shapes: int = 3
    max_shapes: int = 8
    min_size: int = 12
    max_size: int = 120
    empty_fraction: float = 0.05
    max_occlusion: float = 0.6

    def __post_init__(self):
        if self.num_images < 1 or self.image_size < 16:
            raise ValueError(f"need num_images >= 1 and image_size >= 16, got {self}")
        if not 1 <= self.min_shapes <= self.max_shapes:
            raise ValueError(f"need 1 <= min_shapes <= max_shapes, got {self}")
        if not 4 <= self.min_size <= self.max_size <= self.image_size:
            raise ValueError(f"need 4 <= min_size <= max_size <= image_size, got {self}")
        if not 0.0 <= self.empty_fraction <= 1.0 or not 0.0 <= self.max_occlusion <= 1.0:
            raise ValueError(f"empty_fraction and max_occlusion must be in [0, 1], got {self}")

    @property
    def dirname(self) -> str:
        """Cache folder name: every parameter is in it, so different settings never share a folder."""
        return (
            f"shapes_v{_FORMAT_VERSION}_n{self.num_images}_px{self.image_size}_seed{self.seed}"
            f"_obj{self.min_shapes}-{self.max_shapes}_size{self.min_size}-{self.max_size}"
            f"_empty{self.empty_fraction:g}_occ{self.max_occlusion:g}"
        )


@dataclass
class RenderedImage:
    """One generated image.

    ``image``: (H, W, 3) uint8 RGB. ``instance_map``: (H, W) int32, 0 for background and k + 1 where
    ``annotations[k]`` is visible. ``annotations``: COCO annotation dicts without ``id``/``image_id``
    (``bbox`` is XYWH in pixels, tight around the visible pixels; ``area`` is their count), plus ``color``:
    the object's RGB fill before noise.
    """

    image: np.ndarray
    instance_map: np.ndarray
    annotations: list[dict]


def datasets_root() -> Path:
    """``$RECURSIVEDET_DATASETS`` if set, else ``~/.cache/recursivedet/datasets`` (not created here)."""
    root = os.environ.get("RECURSIVEDET_DATASETS")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "recursivedet" / "datasets"


def shapes_dir(config: ShapesConfig, root: str | os.PathLike | None = None) -> Path:
    """Folder that holds (or will hold) ``annotations.json`` and ``images/`` for ``config``."""
    return Path(root if root is not None else datasets_root()) / config.dirname


def _paths(config: ShapesConfig, root) -> tuple[str, str]:
    base = shapes_dir(config, root)
    # str, not Path: load_coco_json tests `"minival" in json_file`.
    return str(base / _JSON_NAME), str(base / _IMAGE_DIR)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Cluttered (size, size, 3) float32 background, roughly in [0, 255] (clipped later)."""
    coords = np.arange(size, dtype=np.float32) / size
    yy, xx = coords[:, None], coords[None, :]
    theta = rng.uniform(0, 2 * math.pi)
    cos, sin = math.cos(theta), math.sin(theta)
    corners = (0.0, cos, sin, cos + sin)  # a linear ramp has its extremes at the corners
    t = (xx * cos + yy * sin - min(corners)) / (max(corners) - min(corners))
    c0, c1 = rng.uniform(0, 255, size=(2, 3)).astype(np.float32)
    img = c0 + t[..., None] * (c1 - c0)
    # A soft blob of light or shadow so the shading is not purely linear.
    cy, cx = rng.uniform(0, 1, size=2)
    sigma = rng.uniform(0.15, 0.5)
    blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2))
    img += blob[..., None] * rng.uniform(-70, 70, size=3).astype(np.float32)

    def blend(rr, cc, alpha, color):
        img[rr, cc] = img[rr, cc] * (1 - alpha[:, None]) + color * alpha[:, None]

    for _ in range(rng.integers(2, 9)):
        r0, c0_, r1, c1_ = rng.integers(0, size, size=4)
        rr, cc, val = draw.line_aa(r0, c0_, r1, c1_)
        blend(rr, cc, val.astype(np.float32), rng.uniform(0, 255, size=3))
    for _ in range(rng.integers(0, 4)):
        pts = rng.integers(0, size, size=6)
        rr, cc = draw.bezier_curve(*pts, weight=rng.uniform(0.5, 3.0), shape=(size, size))
        blend(rr, cc, np.ones(len(rr), np.float32), rng.uniform(0, 255, size=3))
    # Specks: one skimage disk footprint per radius, stamped at many centres at once (a disk call per speck
    # would dominate the generation time).
    for radius in (1.0, 1.5, 2.5):
        n = int(rng.integers(3, 40))
        dr, dc = draw.disk((0, 0), radius)
        centres = rng.integers(0, size, size=(n, 2))
        rr = np.clip(centres[:, :1] + dr, 0, size - 1)
        cc = np.clip(centres[:, 1:] + dc, 0, size - 1)
        img[rr, cc] = rng.uniform(0, 255, size=(n, 1, 3)).astype(np.float32)
    return img


def _axis_ratio(rr: np.ndarray, cc: np.ndarray) -> float:
    """Minor/major axis ratio of the pixels (rr, cc) (1 for a disk), from their second moments."""
    if len(rr) < 3:
        return 1.0
    eig = np.linalg.eigvalsh(np.cov(np.stack([rr, cc]).astype(np.float64)))
    return math.sqrt(max(eig[0], 0.0) / max(eig[1], 1e-9))


def _shape_pixels(rng: np.random.Generator, cfg: ShapesConfig, name: str, extent: float):
    """Row and column indices of one shape of class ``name`` about ``extent`` px long; None if it did not fit."""
    size = cfg.image_size
    hi = min(size, max(cfg.min_size + 2, round(extent) + 1))
    # random_shapes draws each size in [lo, hi]. Rectangles: aspect ratios up to 1:0.6, no slivers. Circles
    # and triangles have one size: keep it near ``extent``. Ellipses get a wide range for their minor axis
    # and are redrawn below until clearly elongated and long enough.
    lo = max(cfg.min_size, round((0.9 if name in ("circle", "triangle") else 0.6) * hi))
    lo_drawn = max(4, round(0.3 * hi)) if name == "ellipse" else lo
    for _ in range(10):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Could not fit any shapes": handled by returning None
            mask, labels = draw.random_shapes(
                (size, size),
                max_shapes=1,
                min_size=lo_drawn,
                max_size=hi,
                shape=name,
                channel_axis=None,
                intensity_range=(0, 0),  # shape pixels 0, background 255
                num_trials=20,
                rng=rng,
            )
        if not labels:
            return None
        rr, cc = np.nonzero(mask == 0)
        # A near-round ellipse would look like a circle: label noise.
        if name != "ellipse" or (_axis_ratio(rr, cc) <= 0.75 and max(np.ptp(rr), np.ptp(cc)) + 1 >= lo):
            break
    else:
        return None
    # random_shapes' triangles all point up and its placement favours the top-left: flips fix both.
    if rng.random() < 0.5:
        rr = size - 1 - rr
    if rng.random() < 0.5:
        cc = size - 1 - cc
    if rng.random() < 0.5:
        rr, cc = cc, rr
    return rr, cc


def _pick_color(rng: np.random.Generator, under: list[np.ndarray]) -> np.ndarray:
    """RGB colour at least ~80 (L2, 0-255 scale) away from each colour in ``under``, when found in 20 tries."""
    best, best_dist = None, -1.0
    for _ in range(20):
        color = rng.uniform(0, 255, size=3).astype(np.float32)
        dist = min(float(np.linalg.norm(color - u)) for u in under) if under else 255.0
        if dist > best_dist:
            best, best_dist = color, dist
        if dist >= 80:
            break
    return best


def render_shapes_image(config: ShapesConfig, index: int) -> RenderedImage:
    """Render image ``index`` of the dataset described by ``config``.

    Depends only on ``(config.seed, index)`` and the shape parameters, not on ``num_images``.
    """
    rng = np.random.default_rng([config.seed, index])
    size = config.image_size
    img = _background(rng, size)
    inst = np.zeros((size, size), np.int32)
    full_area: list[int] = []  # pixels of each drawn object, before later shapes cover parts of it
    visible: list[int] = []  # pixels of each drawn object still visible
    categories: list[int] = []
    colors: list[np.ndarray] = []

    num = 0 if rng.random() < config.empty_fraction else int(rng.integers(config.min_shapes, config.max_shapes + 1))
    classes = rng.integers(len(SHAPES_CLASSES), size=num)
    # Slightly skewed towards small extents: truncation at the border and aspect ratios already make the
    # drawn boxes smaller than ``extent``. Gives about 30% of boxes under 32 px and 8% over 96 px (longer side).
    extents = config.min_size + (config.max_size - config.min_size) * rng.uniform(size=num) ** 1.25
    # Larger shapes first: a large shape dropped on small ones would often hide them and be rejected, which
    # would bias sizes downwards. Small shapes still overlap large ones.
    for cls, extent in zip(classes.tolist(), np.sort(extents)[::-1].tolist(), strict=True):
        for _attempt in range(10):
            # Index arrays rather than a full-image mask: most shapes cover a small part of the image.
            pixels = _shape_pixels(rng, config, SHAPES_CLASSES[cls], extent)
            if pixels is None:
                continue
            # Keep every earlier object at least (1 - max_occlusion) visible; else try another placement.
            covered = np.bincount(inst[pixels], minlength=len(visible) + 1)[1:]
            keep = (1 - config.max_occlusion) * np.asarray(full_area)
            if np.all(np.asarray(visible) - covered >= keep):
                break
        else:
            continue
        under = [img[pixels].mean(axis=0)] + [colors[k - 1] for k in np.flatnonzero(covered) + 1]
        color = _pick_color(rng, under)
        img[pixels] = color
        visible = [v - c for v, c in zip(visible, covered.tolist(), strict=True)]
        full_area.append(len(pixels[0]))
        visible.append(full_area[-1])
        categories.append(cls + 1)
        colors.append(color)
        inst[pixels] = len(full_area)

    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(2.0, 10.0))
    image = np.clip(np.rint(img), 0, 255).astype(np.uint8)

    # Boxes come from what is visible at the end: later shapes may have covered parts of earlier ones.
    areas = np.bincount(inst.ravel(), minlength=len(categories) + 1)[1:]
    slices = ndimage.find_objects(inst, max_label=len(categories))
    annotations, new_id = [], np.zeros(len(categories) + 1, np.int32)
    for k, (cat, color, area, box) in enumerate(zip(categories, colors, areas.tolist(), slices, strict=True), start=1):
        if area == 0:  # fully hidden (only possible with max_occlusion=1)
            continue
        ys, xs = box
        new_id[k] = len(annotations) + 1
        annotations.append(
            {
                "category_id": cat,
                "bbox": [xs.start, ys.start, xs.stop - xs.start, ys.stop - ys.start],
                "area": area,
                "iscrowd": 0,
                "color": [float(c) for c in color],
            }
        )
    return RenderedImage(image=image, instance_map=new_id[inst], annotations=annotations)


def _write_dataset(config: ShapesConfig, out: Path) -> None:
    """Write ``images/*.png`` and ``annotations.json`` for ``config`` into the existing folder ``out``."""
    (out / _IMAGE_DIR).mkdir()

    def render_and_save(i: int) -> list[dict]:
        r = render_shapes_image(config, i)
        Image.fromarray(r.image).save(out / _IMAGE_DIR / f"{i:06d}.png", compress_level=1)
        return r.annotations

    # Threads, not processes: PNG encoding releases the GIL and overlaps with rendering, and forking a
    # process that may hold CUDA or data-loader state is not safe. Each image depends only on its index,
    # and map() keeps the order, so the output does not depend on the number of threads.
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        per_image = list(pool.map(render_and_save, range(config.num_images)))

    images, annotations = [], []
    for i, anns in enumerate(per_image):
        size = config.image_size
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": size, "height": size})
        for ann in anns:
            ann = {k: v for k, v in ann.items() if k != "color"}
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
    coco = {
        "info": {"description": "recursivedet shapes", "version": _FORMAT_VERSION, **dataclasses.asdict(config)},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(SHAPES_CLASSES)],
    }
    (out / _JSON_NAME).write_text(json.dumps(coco, separators=(",", ":")))


def _is_complete(path: Path) -> bool:
    return (path / _COMPLETE_MARKER).is_file()


def ensure_shapes(config: ShapesConfig, root: str | os.PathLike | None = None) -> Path:
    """Return the dataset folder for ``config``, generating it first if it is not complete.

    Safe when several processes call it at once: each generates into its own temporary sibling folder
    (``.tmp-*``, left behind only if the process is killed), writes the marker file last and renames the
    folder into place; a rename that finds the folder already there loses and its copy is discarded, so
    readers only ever see a complete folder. Later callers wait for the first one rather than generating too.
    """
    final = shapes_dir(config, root)
    if _is_complete(final):
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # iopath's portable file lock (the one detectron2 uses for its caches): concurrent processes, e.g. the
    # ranks of a distributed run, wait for one generation instead of all generating; the atomic rename
    # below still decides where locks do not work (some network file systems).
    with file_lock(str(final.parent / f".{final.name}")):
        if _is_complete(final):  # generated by another process while we waited
            return final
        # Our folders get their marker before the rename (and exists() is checked before the marker), so
        # this one was made or damaged by something else: better ask than delete what we did not make.
        if final.exists() and not _is_complete(final):
            raise DatasetError(
                f"incomplete dataset folder {final} (no {_COMPLETE_MARKER} file): delete it to regenerate"
            )
        tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex}"
        tmp.mkdir()
        try:
            _write_dataset(config, tmp)
            (tmp / _COMPLETE_MARKER).write_text(json.dumps(dataclasses.asdict(config)))
            try:
                os.rename(tmp, final)
            except OSError:
                # Another process finished first (a rename onto a non-empty folder fails).
                if not _is_complete(final):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def register_shapes(name: str, config: ShapesConfig | None = None, root: str | os.PathLike | None = None) -> None:
    """Register a shapes dataset under ``name`` in detectron2's DatasetCatalog and MetadataCatalog.

    Writes nothing: the images are generated on the first ``DatasetCatalog.get(name)``. The cache root is
    resolved now (``root``, else :func:`datasets_root`), so ``json_file``/``image_root`` metadata are
    available at once, together with ``thing_classes``, ``thing_dataset_id_to_contiguous_id`` and
    ``evaluator_type="coco"``.
    """
    config = config or ShapesConfig()
    root = Path(root) if root is not None else datasets_root()
    json_file, image_root = _paths(config, root)
    check_name_free(name, json_file)

    def load() -> list[dict]:
        ensure_shapes(config, root)
        return load_coco_json(json_file, image_root, name)

    DatasetCatalog.register(name, load)
    MetadataCatalog.get(name).set(
        json_file=json_file,
        image_root=image_root,
        evaluator_type="coco",
        thing_classes=list(SHAPES_CLASSES),
        thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SHAPES_CLASSES))},
    )


def register_builtin_shapes() -> None:
    """Register ``shapes_train`` (1000 images, seed 0) and ``shapes_val`` (100 images, seed 1); idempotent."""
    for name, config in (("shapes_train", ShapesConfig()), ("shapes_val", ShapesConfig(num_images=100, seed=1))):
        if name not in DatasetCatalog.list():
            register_shapes(name, config)
