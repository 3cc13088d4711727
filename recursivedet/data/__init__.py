"""Datasets: the built-in procedurally generated ``shapes_train``/``shapes_val`` and users' COCO json.

Importing this package registers ``shapes_train`` and ``shapes_val`` (nothing is generated or written until
they are first loaded).
"""

from recursivedet.data.coco_register import DatasetError, read_image_checked, register_coco_dataset, validate_coco_json
from recursivedet.data.shapes import (
    SHAPES_CLASSES,
    ShapesConfig,
    datasets_root,
    ensure_shapes,
    register_builtin_shapes,
    register_shapes,
    render_shapes_image,
    shapes_dir,
)

__all__ = [
    "DatasetError",
    "SHAPES_CLASSES",
    "ShapesConfig",
    "datasets_root",
    "ensure_shapes",
    "read_image_checked",
    "register_builtin_shapes",
    "register_coco_dataset",
    "register_shapes",
    "render_shapes_image",
    "shapes_dir",
    "validate_coco_json",
]

register_builtin_shapes()
