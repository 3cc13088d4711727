"""Export a trained config + weights (any host: Sparse R-CNN, DiffusionDet, AdaMixer) to an ExportedProgram,
ONNX and TorchScript, checked against PyTorch.

    python -m recursivedet.deploy --config-file CONFIG --weights model_final.pth \\
        --format pt2 onnx torchscript --output DIR [--images DIR] [--check-images 3] [key=value ...]

Writes ``DIR/model.pt2`` (``torch.export``), ``DIR/model.onnx`` (ONNX opset 18) and/or ``DIR/model.ts``
(TorchScript), and ``DIR/deploy.json``. The exported model takes one image, a float32 tensor (3, H, W) of
0-255 pixels in the model's input format (``input_format`` in deploy.json), already resized as the config's test
mapper resizes (``test_resize``), of any size; it returns ``boxes`` (K, 4) in that image's pixels (x1, y1, x2,
y2), ``scores`` (K,) and ``classes`` (K,) (contiguous indices into ``classes`` of deploy.json), the model's
detections (a DiffusionDet model's from fixed sampling noise: see its project's ``deploy.py``).

After writing, each file is loaded and run (ONNX in onnxruntime) on ``--check-images`` images of the config's
test dataset (or of ``--images``), each at its own size and at a distorted one, next to the PyTorch model;
the largest differences are printed, and the command exits with status 1 when the classes differ or a box
or score differs by more than ``--box-tolerance`` pixels or ``--score-tolerance``. The export runs on the CPU.
"""

import argparse
import copy
import json
import logging
import sys
from pathlib import Path

import torch
from detectron2.config import instantiate
from detectron2.utils.logger import setup_logger

from recursivedet.engine import ConfigOverrideError, build_model, get_dataset_dicts, load_config, load_weights
from recursivedet.engine.checkpoint import atomic_write
from recursivedet.engine.output_folder import output_folder
from recursivedet.export import SkipUnreadable, check_paths, dataset_metadata, image_folder_dicts
from recursivedet.hosts import host_of_model

from .check import compare
from .formats import FORMATS, DeployFormatError, check_format, load, require_onnx_exporter, require_onnxruntime, write

logger = logging.getLogger("recursivedet.deploy")


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recursivedet.deploy",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[2:]),
    )
    parser.add_argument("--config-file", required=True, metavar="FILE", help="LazyConfig .py or config name")
    parser.add_argument("--weights", required=True, metavar="FILE", help="checkpoint (.pth) to export")
    parser.add_argument(
        "--format", nargs="+", required=True, choices=sorted(FORMATS), help="pt2, onnx and/or torchscript"
    )
    parser.add_argument("--output", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--images", metavar="DIR", help="check on these images (default: the test dataset's)")
    parser.add_argument("--check-images", type=int, default=3, metavar="N", help="images to check on (3)")
    parser.add_argument("--box-tolerance", type=float, default=0.5, metavar="PX", help="largest box difference (0.5)")
    parser.add_argument("--score-tolerance", type=float, default=1e-3, metavar="S", help="largest score difference")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides, key=value")
    return parser


def check_images(cfg, images_dir: str | None, count: int) -> list[torch.Tensor]:
    """Up to ``count`` readable images as the test mapper gives them (resized, (3, H, W) float)."""
    dicts = image_folder_dicts(images_dir) if images_dir else get_dataset_dicts(cfg.dataloader.test.dataset.names)
    mapper = SkipUnreadable(instantiate(cfg.dataloader.test.mapper))
    images = []
    for record in dicts:
        x = mapper(record)
        if "unreadable" in x:
            logger.warning(f"skipped {x['file_name']}: {x['unreadable']}")
            continue
        images.append(x["image"].float())
        if len(images) == count:
            break
    if not images:
        raise DeployFormatError("no readable image to check the exported model on")
    return images


def describe_input(cfg, model, metadata) -> dict:
    """What a user of the exported file needs: input format, test resize and class names."""
    resize = None
    for aug in instantiate(cfg.dataloader.test.mapper).augmentations.augs:
        if type(aug).__name__ == "ResizeShortestEdge":
            resize = {"shortest_edge": list(aug.short_edge_length), "max_size": aug.max_size}
    return {
        "input": "image (3, H, W) float32, 0-255, channels " + model.input_format,
        "input_format": model.input_format,
        "test_resize": resize,
        "outputs": {"boxes": "(K, 4) x1 y1 x2 y2 pixels", "scores": "(K,)", "classes": "(K,) index into classes"},
        "classes": list(metadata.thing_classes) if metadata is not None else None,
    }


def exporter_of(model, config_file: str):
    """What builds ``model``'s exportable graph: its host's ``export`` (:class:`~recursivedet.hosts.Host`);
    :class:`DeployFormatError` with the host's reason when it has none."""
    host = host_of_model(model)
    if host is not None and callable(host.export):
        return host.export
    if host is None:
        why = "no declared host builds it"
    else:
        why = host.export if isinstance(host.export, str) else f"the {host.name} project declares no export"
    raise DeployFormatError(f"{config_file} builds a {type(model).__name__}, which cannot be exported: {why}")


def main(argv=None) -> dict:
    """Export and check as the command line would; returns {format: {"path", "box", "score", ...}}."""
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.check_images < 1:
        parser.error("--check-images must be at least 1")
    check_paths(args)
    try:
        cfg = load_config(args.config_file, [*args.opts, "train.device=cpu"])
    except ConfigOverrideError as e:
        parser.error(str(e))
    if "onnx" in args.format:
        require_onnxruntime()  # before anything slow
        require_onnx_exporter()
    setup_logger(name="recursivedet")
    model = build_model(cfg)
    build_graph = exporter_of(model, args.config_file)
    load_weights(model, args.weights, strict=True)
    model.eval()
    try:
        graph = build_graph(copy.deepcopy(model))
    except ValueError as e:
        raise DeployFormatError(f"{args.config_file}: {e}") from None
    for fmt in args.format:  # every format before any is written
        check_format(fmt)
    images = check_images(cfg, args.images, args.check_images)
    output = Path(args.output)
    # Before anything is written: a folder that cannot be written, or that another command writes into, stops here.
    with output_folder(str(output), "deploy"):
        return _write_and_check(args, cfg, model, graph, images, output)


def _write_and_check(args, cfg, model, graph, images, output: Path) -> dict:
    """:func:`main` once the inputs are checked and the output folder is held: every format written, checked
    against PyTorch, and described in ``deploy.json``."""
    torch.manual_seed(0)
    report, failed = {}, []
    for fmt in dict.fromkeys(args.format):
        path = write(graph, images[0], fmt, output / FORMATS[fmt])
        difference = compare(model, load(path), images)
        within = difference.within(args.box_tolerance, args.score_tolerance)
        sizes = ", ".join(f"{h}x{w}" for h, w in difference.sizes)
        print(
            f"{fmt}: wrote {path} (captured at {images[0].shape[1]}x{images[0].shape[2]}); against PyTorch on "
            f"{len(images)} images at their own and a distorted size ({sizes}): {difference.describe()} "
            f"[tolerance {args.box_tolerance} px, {args.score_tolerance}: {'ok' if within else 'FAILED'}]"
        )
        report[fmt] = {
            "path": str(path),
            "box": difference.box,
            "score": difference.score,
            "class_mismatches": difference.class_mismatches,
            "checked_sizes": difference.sizes,
            "within_tolerance": within,
        }
        if not within:
            failed.append(fmt)
    try:
        metadata = dataset_metadata(
            cfg.dataloader.train.dataset.names
            if isinstance(cfg.dataloader.train.dataset.names, str)
            else cfg.dataloader.train.dataset.names[0]
        )
    except (KeyError, ValueError):
        metadata = None
    info = describe_input(cfg, model, metadata) | {"tolerance": [args.box_tolerance, args.score_tolerance]}
    info["formats"] = report
    text = json.dumps(info, indent=1)
    atomic_write(str(output / "deploy.json"), lambda f: f.write(text.encode()))
    report["failed"] = failed
    return report


def command(argv=None) -> int:
    report = main(argv)
    if report["failed"]:
        print(
            f"error: the {' and '.join(report['failed'])} model's outputs differ from PyTorch's by more than the "
            "tolerance (see above)",
            file=sys.stderr,
        )
        return 1
    return 0
