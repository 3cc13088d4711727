"""Export predictions as COCO-format results json, for a registered dataset or a folder of images.

    python -m recursivedet.export --config-file CONFIG --weights model_final.pth \\
        (--dataset NAME | --images DIR | --video FILE) --output OUT [--score-threshold 0.05] [--visualize]
        [key=value ...]

Writes ``OUT/predictions.json``: a list of ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``
(pycocotools' ``COCO.loadRes`` format). With ``--dataset``, image and category ids are the dataset's own
(contiguous class indices are mapped back with ``thing_dataset_id_to_contiguous_id``). With ``--images``,
images are numbered 1..N in sorted file-name order and ``OUT/images.json`` (COCO ``images`` and
``categories``, no annotations) describes them; the categories are those of the model's training dataset
(``dataloader.train.dataset.names``). ``--visualize`` also draws the detections above ``--vis-threshold``
into ``OUT/visualizations/*.png``. Scores are sigmoid probabilities: both thresholds are in [0, 1].
Trailing ``key=value`` pairs override the config as in ``train_net.py``.

With ``--video`` (any file OpenCV decodes), each frame is one image: ``image_id`` is the frame index + 1 and
every result also carries ``"frame"`` (0-based); ``OUT/images.json`` lists the frames; ``--visualize`` writes
``OUT/visualized.mp4``. Progress shows the rate and the time left; at the end the time in the model is printed
apart from the time reading (decoding and resizing) and drawing.

An image that cannot be read is skipped with a warning naming it and the reason; the others are exported
and the command exits with status 1. A skipped image of a folder keeps its number (the ids of the others do
not depend on which files could be read) but is left out of ``images.json`` (its size is unknown). Both
json files are written to a temporary file and renamed, so an interrupted export leaves the old file or the
complete new one. A wrong argument (missing file, ``--output`` naming a file) stops with one ``error:`` line
and exit status 2.
"""

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from detectron2.config import instantiate
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.detection_utils import SizeMismatchError
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.logger import setup_logger
from detectron2.utils.visualizer import Visualizer
from tqdm import tqdm

from recursivedet.data.coco_register import DatasetError, read_image_checked
from recursivedet.engine import (
    ConfigOverrideError,
    build_model,
    check_num_classes,
    get_dataset_dicts,
    load_config,
    load_weights,
    require_registered,
)
from recursivedet.engine.checkpoint import atomic_write
from recursivedet.engine.output_folder import output_folder
from recursivedet.errors import ConfigFileError, UserError, run_command
from recursivedet.inference.speed import inference_model
from recursivedet.inference.video import Stopwatch, VideoFrames, VideoWriter
from recursivedet.model_zoo import get_config_file

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
CONFIG_EXTENSIONS = (".py", ".yaml", ".yml")  # what detectron2's LazyConfig.load accepts
logger = logging.getLogger("recursivedet.export")


class ExportArgumentError(UserError, ValueError):
    """A command-line argument names a file or folder the export cannot use."""


@dataclass
class ExportResult:
    """What :func:`main` wrote, and the images it skipped because they could not be read."""

    written: dict[str, Path]  # "predictions", and "images" for a folder
    skipped: dict[str, str] = field(default_factory=dict)  # image file -> why it could not be read
    num_images: int = 0  # images of the dataset or folder, skipped ones included


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
    """Dataset dicts for the images directly in ``folder`` (``--images``; sorted by name; ids 1..N). Files
    are not read here: an unreadable one is found (and skipped) when the export reads it."""
    if not os.path.exists(folder):
        raise DatasetError(f"--images {folder} does not exist")
    if not os.path.isdir(folder):
        raise DatasetError(f"--images {folder} is a file, not a folder of images")
    entries = sorted(os.listdir(folder))
    files = [f for f in entries if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
    if not files:
        raise DatasetError(f"--images {folder} holds no image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    others = [f + ("/" if os.path.isdir(os.path.join(folder, f)) else "") for f in entries if f not in files]
    if others:  # not searched: subfolders; not read: other formats (e.g. .gif, which OpenCV does not decode)
        logger.warning(
            f"--images {folder}: left out {len(others)} entries that are no images of the formats read "
            f"({', '.join(sorted(IMAGE_EXTENSIONS))}; subfolders are not searched): {', '.join(others[:5])}"
            + (", ..." if len(others) > 5 else "")
        )
    return [{"file_name": os.path.join(folder, f), "image_id": i} for i, f in enumerate(files, start=1)]


class SkipUnreadable:
    """Wraps a test mapper so that an image that cannot be read yields ``{"unreadable": reason, ...}``
    instead of an exception. In a loader worker an exception would end the whole loader, and detectron2's
    ``MapDataset`` would replace a ``None`` result with another (random) image."""

    # The project's mapper raises DatasetError for a file that cannot be read or whose size is not the
    # dataset's; detectron2's own DatasetMapper raises SizeMismatchError for the latter. Other errors are
    # bugs and propagate.
    READ_ERRORS = (DatasetError, SizeMismatchError)

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict: dict) -> dict:
        try:
            return self.mapper(dataset_dict)
        except self.READ_ERRORS as e:
            return {
                "file_name": dataset_dict["file_name"],
                "image_id": dataset_dict.get("image_id"),
                "unreadable": str(e),
            }


# The longer side of a drawing, in pixels: the drawing of a 8000 x 8000 image at full size takes seconds and
# gigabytes (matplotlib draws at the canvas size), where the detections are as legible at this size.
MAX_DRAWING_SIDE = 2000


def draw_detections(rgb, instances, metadata):
    """(H, W, 3) RGB image with ``instances`` (in its pixels) drawn by detectron2's Visualizer, scaled down so
    that its longer side is at most :data:`MAX_DRAWING_SIDE`; returns the drawing, (h, w, 3) RGB uint8."""
    scale = min(1.0, MAX_DRAWING_SIDE / max(rgb.shape[:2]))
    return Visualizer(rgb, metadata, scale=scale).draw_instance_predictions(instances).get_image()


def write_png(path: Path, rgb) -> None:
    """Write an RGB image as PNG atomically (never through a symlink at ``path``: it is replaced)."""
    ok, png = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    if not ok:
        raise OSError(f"could not encode the drawing {path} as PNG")
    atomic_write(str(path), lambda f: f.write(png.tobytes()))


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
) -> tuple[list[dict], list[dict], dict[str, str]]:
    """Run ``model`` (in eval mode) on ``dataset_dicts`` with the config's test mapper; return the COCO
    results (categories mapped with ``metadata``), COCO ``images`` entries of the images read, and the
    images that could not be read ({file: reason}, each logged as a warning); optionally draw PNGs."""
    ids = category_ids(metadata)
    mapper = SkipUnreadable(instantiate(cfg.dataloader.test.mapper))
    loader = build_detection_test_loader(dataset_dicts, mapper=mapper, num_workers=cfg.dataloader.test.num_workers)
    vis_dir = Path(output_dir) / "visualizations"
    if visualize:
        vis_dir.mkdir(parents=True, exist_ok=True)
    results, images, skipped = [], [], {}
    model.eval()
    clock = Stopwatch()
    batches = iter(loader)
    for _ in tqdm(range(len(dataset_dicts)), desc="predicting", unit="image"):
        with clock("read"):
            inputs = next(batches)
        (x,) = inputs
        if "unreadable" in x:
            logger.warning(f"skipped image {x['image_id']}: {x['unreadable']}")
            skipped[x["file_name"]] = x["unreadable"]
            continue
        with clock("model"):
            instances = model(inputs)[0]["instances"].to("cpu")
        instances = instances[instances.scores >= score_threshold]
        for r in instances_to_coco_json(instances, x["image_id"]):
            r["category_id"] = ids[r["category_id"]]
            results.append(r)
        images.append({"id": x["image_id"], "file_name": x["file_name"], "width": x["width"], "height": x["height"]})
        if visualize:
            with clock("draw"):
                try:  # the file was readable a moment ago; a drawing is not worth stopping the export for
                    image = read_image_checked(x["file_name"], "RGB")
                except DatasetError as e:
                    logger.warning(f"no drawing of image {x['image_id']}: {e}")
                    continue
                shown = instances[instances.scores >= vis_threshold]
                name = f"{x['image_id']}_{Path(x['file_name']).stem}.png"
                write_png(vis_dir / name, draw_detections(image, shown, metadata))
    print(f"{len(images)} images: {clock.summary(len(images), 'image')}")
    return results, images, skipped


@torch.no_grad()
def export_video(
    cfg,
    model,
    frames: VideoFrames,
    metadata,
    output_dir: str,
    *,
    score_threshold: float = 0.0,
    visualize: bool = False,
    vis_threshold: float = 0.5,
) -> tuple[list[dict], list[dict]]:
    """:func:`export_predictions` for the frames of a video (:class:`VideoFrames` of the config's test
    mapper): results with ``"frame"`` (image id = frame + 1), the frames as COCO ``images``; with ``visualize``
    the drawn frames as ``output_dir/visualized.mp4``."""
    ids = category_ids(metadata)
    writer = None
    if visualize:
        writer = VideoWriter(Path(output_dir) / "visualized.mp4", frames.fps, frames.width, frames.height)
    results, images = [], []
    model.eval()
    clock = Stopwatch()
    reader = iter(frames)
    progress = tqdm(total=frames.num_frames, desc="predicting", unit="frame")
    try:
        while True:
            with clock("read"):
                x = next(reader, None)
            if x is None:
                break
            image_id = x["frame"] + 1
            with clock("model"):
                instances = model([x])[0]["instances"].to("cpu")
            instances = instances[instances.scores >= score_threshold]
            for r in instances_to_coco_json(instances, image_id):
                r["category_id"] = ids[r["category_id"]]
                r["frame"] = x["frame"]
                results.append(r)
            images.append(
                {
                    "id": image_id,
                    "frame": x["frame"],
                    "file_name": os.path.basename(frames.path),
                    "width": x["width"],
                    "height": x["height"],
                }
            )
            if writer is not None:
                with clock("draw"):
                    shown = instances[instances.scores >= vis_threshold]
                    writer.write(Visualizer(x["rgb"], metadata).draw_instance_predictions(shown).get_image())
            progress.update()
    except BaseException:  # an interrupted export leaves no partial video
        if writer is not None:
            writer.discard()
        raise
    progress.close()
    if writer is not None:
        writer.close()
    print(f"{len(images)} frames: {clock.summary(len(images), 'frame')}")
    return results, images


def write_json(path: Path, data) -> None:
    """Write ``data`` as json to ``path`` atomically (a temporary file renamed over ``path``)."""
    text = json.dumps(data)
    atomic_write(str(path), lambda f: f.write(text.encode()))
    logger.info(f"wrote {path}")


def parse_score(text: str) -> float:
    """argparse type of a score threshold: a number in [0, 1]. Scores are sigmoid probabilities, so a
    threshold above 1 would keep nothing, one below 0 everything, and NaN compares false with any score."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a score in [0, 1], got {text!r}") from None
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a score in [0, 1] (detection scores are sigmoid probabilities), got {text}"
        )
    return value


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recursivedet.export",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument(
        "--config-file", required=True, metavar="FILE", help="LazyConfig .py of the model, or a config name"
    )
    parser.add_argument("--weights", required=True, metavar="FILE", help="checkpoint (.pth) to run")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dataset", metavar="NAME", help="a registered dataset name")
    source.add_argument("--images", metavar="DIR", help="a folder of images")
    source.add_argument("--video", metavar="FILE", help="a video file (one image per frame)")
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--score-threshold", type=parse_score, default=0.0, metavar="S", help="drop detections below S (0)"
    )
    parser.add_argument(
        "--visualize", action="store_true", help="also draw the detections (PNGs; for a video, visualized.mp4)"
    )
    parser.add_argument(
        "--vis-threshold", type=parse_score, default=0.5, metavar="S", help="draw detections from S (0.5)"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    return parser


def check_paths(args: argparse.Namespace) -> None:
    """Raise :class:`ExportArgumentError` if ``--config-file`` or ``--weights`` is not a file or ``--output``
    is one: before anything slow, and naming the option (detectron2's own errors do not)."""
    try:
        config = get_config_file(args.config_file)  # a file or a config name
    except ConfigFileError as e:
        raise ExportArgumentError(f"--config-file: {e}") from None
    if not config.endswith(CONFIG_EXTENSIONS):
        raise ExportArgumentError(f"--config-file {config} is not a LazyConfig file ({', '.join(CONFIG_EXTENSIONS)})")
    weights = args.weights
    if "://" not in weights:  # a URL is downloaded by detectron2's checkpointer
        if not os.path.exists(weights):
            raise ExportArgumentError(f"--weights {weights} does not exist")
        if not os.path.isfile(weights):
            raise ExportArgumentError(f"--weights {weights} is a directory, not a checkpoint file (.pth)")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise ExportArgumentError(f"--output {args.output} is an existing file, not a folder")


def main(argv=None) -> ExportResult:
    """Export as the command line would (``argv`` as ``sys.argv[1:]``); return what was written and
    skipped. Bad arguments raise :class:`~recursivedet.errors.UserError` (argparse errors exit, as
    usual); an unreadable image is skipped, not raised, unless no image can be read at all."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    check_paths(args)
    try:
        cfg = load_config(args.config_file, args.opts)
    except ConfigOverrideError as e:
        parser.error(str(e))
    setup_logger(name="recursivedet")
    output = Path(args.output)
    if args.dataset:
        dicts = get_dataset_dicts(args.dataset, filter_empty=False)
        category_source = args.dataset
    else:
        dicts = [] if args.video else image_folder_dicts(args.images)
        train_names = cfg.dataloader.train.dataset.names
        category_source = train_names if isinstance(train_names, str) else train_names[0]
    metadata = dataset_metadata(category_source)
    # Before the model runs: a class the dataset does not have would fail the category mapping at the end.
    check_num_classes(cfg, [category_source])
    frames = VideoFrames(args.video, instantiate(cfg.dataloader.test.mapper)) if args.video else None
    # Before the model runs: a folder that cannot be written, or that another command is writing into, stops here.
    with output_folder(str(output), "export"):
        return _export(args, cfg, output, dicts, metadata, frames)


def _export(args, cfg, output: Path, dicts, metadata, frames) -> ExportResult:
    """:func:`main` once the inputs are checked and the output folder is held: the model over the inputs."""
    model = build_model(cfg)
    load_weights(model, args.weights, strict=True)
    model = inference_model(cfg, model)  # train.inference and dataloader.tta switches (none: the model itself)
    if args.video:
        options = dict(score_threshold=args.score_threshold, visualize=args.visualize, vis_threshold=args.vis_threshold)
        results, images = export_video(cfg, model, frames, metadata, str(output), **options)
        categories = [{"id": i, "name": n} for i, n in zip(category_ids(metadata), metadata.thing_classes, strict=True)]
        written = {"predictions": output / "predictions.json", "images": output / "images.json"}
        write_json(written["predictions"], results)
        write_json(written["images"], {"images": images, "categories": categories, "annotations": []})
        if args.visualize:
            written["video"] = output / "visualized.mp4"
        return ExportResult(written, {}, len(images))
    results, images, skipped = export_predictions(
        cfg,
        model,
        dicts,
        metadata,
        str(output),
        score_threshold=args.score_threshold,
        visualize=args.visualize,
        vis_threshold=args.vis_threshold,
    )
    if dicts and not images:  # nothing to export: keep whatever an earlier export wrote
        source = f"--dataset {args.dataset}" if args.dataset else f"--images {args.images}"
        raise DatasetError(f"none of the {len(dicts)} images of {source} could be read (see the warnings above)")
    written = {"predictions": output / "predictions.json"}
    write_json(written["predictions"], results)
    if args.images:
        for image in images:  # relative to the folder, as COCO's file_name
            image["file_name"] = os.path.relpath(image["file_name"], args.images)
        categories = [{"id": i, "name": n} for i, n in zip(category_ids(metadata), metadata.thing_classes, strict=True)]
        written["images"] = output / "images.json"
        write_json(written["images"], {"images": images, "categories": categories, "annotations": []})
    if skipped:
        logger.warning(f"skipped {len(skipped)} of {len(dicts)} images that could not be read")
    return ExportResult(written, skipped, len(dicts))


def command(argv=None) -> int:
    """``main`` for the command line: exit status 1 (after a summary on stderr) if images were skipped."""
    result = main(argv)
    if not result.skipped:
        return 0
    print(
        f"warning: {len(result.skipped)} of {result.num_images} images could not be read and were skipped "
        f"({_some(sorted(result.skipped))}); the outputs cover the other "
        f"{result.num_images - len(result.skipped)}",
        file=sys.stderr,
    )
    return 1


def _some(items: list[str], n: int = 3) -> str:
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


if __name__ == "__main__":
    run_command(command)
