"""Write a small golden fixture of an official code, so that the tests check the agreement without a checkout.

    python -m recursivedet.projects.SparseRCNN.side_by_side.golden --official-root PATH --arch recursivedet \\
        --output tests/projects/SparseRCNN/golden_recursivedet.pth

``PATH`` is a checkout of bravezzzzzz/RecursiveDet (``--arch recursivedet``) or PeizeSun/SparseR-CNN
(``--arch sparse_rcnn``). The official model is built from its own R50-FPN config with :data:`SIZES` (10
proposals, 3 classes) and its head and proposals get the weights of
:func:`~recursivedet.analysis.golden.seeded_official_weights`, which the
tests regenerate from the names, shapes and seed: the file holds those, not the weights (a few hundred kB). It
also holds what the head receives and gives on one image: the FPN maps, the image size, every stage's logits and
boxes, and the weighted losses of one training step on three ground-truth boxes.
``tests/projects/SparseRCNN/test_sparse_rcnn_golden.py`` converts the weights with this project's converter, runs this
project's decoder on the same maps and compares. Run it in a process of its own: it imports the official package.
"""

from pathlib import Path

import torch

from recursivedet.analysis.golden import (
    IMAGE_SIZE,
    fixture_command,
    golden_batch,
    official_shapes,
    seeded_official_weights,
    set_weights,
)
from recursivedet.errors import run_command

from .official import OFFICIAL_CONFIG, import_official

SIZES = {"num_classes": 3, "num_proposals": 10}


def small_official_model(root: Path, seed: int):
    """The official model of the checkout at ``root`` with :data:`SIZES` and :func:`seeded_official_weights`."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    sparsercnn = import_official(root)
    cfg = get_cfg()
    sparsercnn.add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(root / OFFICIAL_CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SparseRCNN.NUM_CLASSES = SIZES["num_classes"]
    cfg.MODEL.SparseRCNN.NUM_PROPOSALS = SIZES["num_proposals"]
    torch.manual_seed(seed)  # the backbone's random weights: only its maps are kept
    model = build_model(cfg)
    set_weights(model, seeded_official_weights(official_shapes(model), seed))
    return model


def write_fixture(root: Path, seed: int = 0, arch: str = "recursivedet") -> dict:
    model = small_official_model(root, seed)
    found = "recursivedet" if hasattr(model.head, "rcnn_head_first") else "sparse_rcnn"
    if found != arch:
        raise SystemExit(f"error: the checkout at {root} is the official {found} code, not {arch}")
    calls = []
    model.head.register_forward_hook(lambda module, args, output: calls.append((args, output)))
    batch = golden_batch(seed)
    model.eval()
    with torch.no_grad():
        model(batch)
    model.train()
    losses = model(batch)
    (args, (logits, boxes)), _ = calls
    features = args[0]
    fixture = {
        "arch": arch,
        "sizes": SIZES,
        "image_size": IMAGE_SIZE,
        "seed": seed,
        "official_shapes": official_shapes(model),
        "features": [f.detach().clone() for f in features],
        "stage_logits": logits[:, 0].detach().clone(),  # (T, N, K)
        "stage_boxes": boxes[:, 0].detach().clone(),  # (T, N, 4)
        "box_format": "cxcywh_normalised" if arch == "recursivedet" else "xyxy_pixels",
        "gt_boxes": batch[0]["instances"].gt_boxes.tensor.clone(),
        "gt_classes": batch[0]["instances"].gt_classes.clone(),
        "losses": {k: v.item() for k, v in losses.items()},  # weighted, as the official training sums them
    }
    return fixture


def main(argv=None) -> int:
    return fixture_command(__doc__, write_fixture, argv, archs=("recursivedet", "sparse_rcnn"))


if __name__ == "__main__":
    run_command(main)
