"""Export predictions as COCO-format results json, for a registered dataset or a folder of images.

    python -m recursivedet.export --config-file CONFIG --weights model_final.pth \\
        (--dataset NAME | --images DIR) --output OUT [--score-threshold 0.05] [--visualize] [key=value ...]

Writes ``OUT/predictions.json``: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
(pycocotools' ``COCO.loadRes`` format). With ``--dataset``, image and category ids are the dataset's own
(contiguous class indices are mapped back with ``thing_dataset_id_to_contiguous_id``). With ``--images``,
images are numbered 1..N in sorted file-name order and ``OUT/images.json`` (COCO ``images`` and
``categories``, no annotations) describes them; the categories are those of the model's training dataset
(``dataloader.train.dataset.names``). ``--visualize`` also draws the detections above ``--vis-threshold``
into ``OUT/visualizations/*.png``. Trailing ``key=value`` pairs override the config as in ``train_net.py``.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from recursivedet.data.coco_register import DatasetError, read_image_checked
from recursivedet.engine import (
    CheckpointError,
    ConfigOverrideError,
    DatasetNotFoundError,
    build_model,
    get_dataset_dicts,
    load_config,
    load_weights,
    require_registered,
)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
logger = logging.getLogger("recursivedet.export")


def dataset_metadata(name: str):
    """Metadata of a registered dataset, with ``thing_classes`` (loads the dataset if only that sets them,
    as for detectron2's ``register_coco_instances``)."""
    (name,) = require_registered(name)
    metadata = MetadataCatalog.get(name)
    if not metadata.get("thing_classes"):
        DatasetCatalog.get(name)
    return metadata


def category_ids(metadata) -> list[int]:
    """Dataset category id of each contiguous class index (1..K when the dataset has no id mapping)."""
    mapping = metadata.get("thing_dataset_id_to_contiguous_id")
    if not mapping:
        return list(range(1, len(metadata.thing_classes) + 1))
    reverse = {contiguous: dataset_id for dataset_id, contiguous in mapping.items()}
    return [reverse[i] for i in range(len(reverse))]


def image_folder_dicts(folder: str) -> list[dict]:
    """Dataset dicts for the images directly in ``folder`` (sorted by name; ids 1..N)."""
    if not os.path.isdir(folder):
        raise DatasetError(f"image folder not found: {folder}")
    files = sorted(f for f in os.listdir(folder) if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
    if not files:
        raise DatasetError(f"no image ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    return [{"file_name": os.path.join(folder, f), "image_id": i} for i, f in enumerate(files, start=1)]


@torch.no_grad()
def export_predictions(
    cfg,
    model,
    dataset_dicts: list[dict],
    metadata,
    output_dir: str,
    *,
    score_threshold: float = 0.0,
    visualize: bool = False,
    vis_threshold: float = 0.5,
) -> tuple[list[dict], list[dict]]:
    """Run ``model`` (in eval mode) on ``dataset_dicts`` with the config's test mapper; return the COCO
    results (categories mapped with ``metadata``) and COCO ``images`` entries, optionally drawing PNGs."""
    ids = category_ids(metadata)
    loader = build_detection_test_loader(
        dataset_dicts, mapper=instantiate(cfg.dataloader.test.mapper), num_workers=cfg.dataloader.test.num_workers
    )
    vis_dir = Path(output_dir) / "visualizations"
    if visualize:
        vis_dir.mkdir(parents=True, exist_ok=True)
    results, images = [], []
    model.eval()
    for inputs in tqdm(loader, total=len(dataset_dicts), desc="predicting", unit="image"):
        (x,) = inputs
        instances = model(inputs)[0]["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        for r in instances_to_coco_json(instances, x["image_id"]):
            r["category_id"] = ids[r["category_id"]]
            results.append(r)
        images.append({"id": x["image_id"], "file_name": x["file_name"], "width": x["width"], "height": x["height"]})
        if visualize:
            image = read_image_checked(x["file_name"], "RGB")
            shown = instances[instances.scores >= vis_threshold]
            name = f"{x['image_id']}_{Path(x['file_name']).stem}.png"
            Visualizer(image, metadata).draw_instance_predictions(shown).save(str(vis_dir / name))
    return results, images


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data))
    logger.info(f"wrote {path}")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recursivedet.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="LazyConfig .py of the model")
    parser.add_argument("--weights", required=True, metavar="FILE", help="checkpoint (.pth) to run")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", metavar="NAME", help="a registered dataset name")
    source.add_argument("--images", metavar="DIR", help="a folder of images")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--score-threshold", type=float, default=0.0, metavar="S", help="drop detections below S (0)")
    parser.add_argument("--visualize", action="store_true", help="also write PNGs with the detections drawn")
    parser.add_argument("--vis-threshold", type=float, default=0.5, metavar="S", help="draw detections from S (0.5)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    return parser


def main(argv=None) -> dict[str, Path]:
    """Command line entry point; returns the written files ({"predictions": ..., "images": ...})."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigOverrideError as e:
        parser.error(str(e))
    setup_logger(name="recursivedet")
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    model = build_model(cfg)
    load_weights(model, args.weights, strict=True)
    if args.dataset:
        dicts = get_dataset_dicts(args.dataset, filter_empty=False)
        metadata = dataset_metadata(args.dataset)
    else:
        dicts = image_folder_dicts(args.images)
        train_names = cfg.dataloader.train.dataset.names
        metadata = dataset_metadata(train_names if isinstance(train_names, str) else train_names[0])
    results, images = export_predictions(
        cfg,
        model,
        dicts,
        metadata,
        str(output),
        score_threshold=args.score_threshold,
        visualize=args.visualize,
        vis_threshold=args.vis_threshold,
    )
    written = {"predictions": output / "predictions.json"}
    write_json(written["predictions"], results)
    if args.images:
        for image in images:  # relative to the folder, as COCO's file_name
            image["file_name"] = os.path.relpath(image["file_name"], args.images)
        categories = [{"id": i, "name": n} for i, n in zip(category_ids(metadata), metadata.thing_classes, strict=True)]
        written["images"] = output / "images.json"
        write_json(written["images"], {"images": images, "categories": categories, "annotations": []})
    return written


if __name__ == "__main__":
    try:
        main()
    except (CheckpointError, DatasetError, DatasetNotFoundError) as e:
        sys.exit(f"error: {e}")
