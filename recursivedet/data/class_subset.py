"""A registered detection dataset restricted to some of its categories (and, optionally, some of its images),
registered under a new name: the split of classes that fine-tuning experiments start from and move to.

    from recursivedet.data.class_subset import register_class_subset

    # a model trained on three classes of shapes_train, then fine-tuned on the fourth
    base = ["rectangle", "circle", "ellipse"]
    register_class_subset("shapes_base_train", "shapes_train", base, image_ids=range(1, 801))
    register_class_subset("shapes_novel_train", "shapes_train", ["triangle"], image_ids=range(801, 1001))

Annotations of the other categories are dropped (their objects become background, as in the base/novel splits of
few-shot detection); the kept categories are renumbered 0..k-1 in the order given, and keep their dataset ids
(``thing_dataset_id_to_contiguous_id``), so evaluation and export report the original category ids. The subset
has no ``json_file``: detectron2's ``COCOEvaluator`` writes the subset's ground truth as COCO json into its output
folder. Nothing is loaded until the subset is first used.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from detectron2.data import DatasetCatalog, MetadataCatalog

from recursivedet.data.coco_register import DatasetError

__all__ = ["register_class_subset"]


def _subset_dicts(base: str, keep: dict[int, int], image_ids: frozenset | None) -> list[dict]:
    out = []
    for record in DatasetCatalog.get(base):
        if image_ids is not None and record["image_id"] not in image_ids:
            continue
        record = dict(record)
        if "annotations" in record:
            record["annotations"] = [
                {**a, "category_id": keep[a["category_id"]]} for a in record["annotations"] if a["category_id"] in keep
            ]
        out.append(record)
    if not out:
        raise DatasetError(f"the subset of dataset {base!r} has no images (none of the image_ids given is in it)")
    return out


def register_class_subset(
    name: str, base: str, classes: Sequence[str], *, image_ids: Iterable[int] | None = None
) -> None:
    """Register ``name``: dataset ``base`` (registered, with ``thing_classes``) with only the annotations of
    ``classes`` (category names of ``base``), and only the images whose ``image_id`` is in ``image_ids`` (all
    when None). Registering the same subset again does nothing; another subset under a taken name is an error.

    Raises:
        DatasetError: an unknown class, no class, or ``name`` taken by another dataset.
    """
    classes = list(classes)
    base_meta = MetadataCatalog.get(base)
    base_classes = list(base_meta.get("thing_classes") or [])
    unknown = [c for c in classes if c not in base_classes]
    if not classes or unknown or len(set(classes)) != len(classes):
        raise DatasetError(
            f"classes of subset {name!r} must be distinct category names of dataset {base!r} "
            f"({', '.join(base_classes) or 'none registered'}), got {classes}"
        )
    ids = frozenset(int(i) for i in image_ids) if image_ids is not None else None
    base_to_id = {v: k for k, v in (base_meta.get("thing_dataset_id_to_contiguous_id") or {}).items()}
    keep = {base_classes.index(c): i for i, c in enumerate(classes)}
    metadata = dict(
        thing_classes=classes,
        thing_dataset_id_to_contiguous_id={base_to_id.get(b, b): i for b, i in keep.items()},
        evaluator_type=base_meta.get("evaluator_type", "coco"),
        subset_of=(base, tuple(classes), tuple(sorted(ids)) if ids is not None else None),
    )
    if base_meta.get("image_root") is not None:
        metadata["image_root"] = base_meta.image_root
    if name in DatasetCatalog.list():
        if MetadataCatalog.get(name).get("subset_of") == metadata["subset_of"]:
            return
        raise DatasetError(f"dataset name {name!r} is already registered for other data; choose another name")
    DatasetCatalog.register(name, lambda: _subset_dicts(base, keep, ids))
    MetadataCatalog.get(name).set(**metadata)
