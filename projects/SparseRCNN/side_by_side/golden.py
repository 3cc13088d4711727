"""Write a small golden fixture of an official code, so that the tests check the agreement without a checkout.

    python -m recursivedet.projects.SparseRCNN.side_by_side.golden --official-root PATH --arch recursivedet \\
        --output tests/projects/SparseRCNN/golden_recursivedet.pth

``PATH`` is a checkout of bravezzzzzz/RecursiveDet (``--arch recursivedet``) or PeizeSun/SparseR-CNN
(``--arch sparse_rcnn``). The official model is built from its own R50-FPN config with :data:`SIZES` (10
proposals, 3 classes) and its head and proposals get the weights of :func:`seeded_official_weights`, which the
tests regenerate from the names, shapes and seed: the file holds those, not the weights (a few hundred kB). It
also holds what the head receives and gives on one image: the FPN maps, the image size, every stage's logits and
boxes, and the weighted losses of one training step on three ground-truth boxes.
``tests/projects/SparseRCNN/test_golden.py`` converts the weights with this project's converter, runs this
project's decoder on the same maps and compares. Run it in a process of its own: it imports the official package.
"""

import argparse
import math
import zlib
from pathlib import Path

import torch

from recursivedet.errors import run_command

from .official import OFFICIAL_CONFIG, import_official

SIZES = {"num_classes": 3, "num_proposals": 10}
IMAGE_SIZE = (64, 96)
GT_BOXES = [[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0], [50.0, 30.0, 70.0, 62.0]]  # pixel xyxy
GT_CLASSES = [0, 2, 1]


def seeded_official_weights(shapes: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    """Weights for the official head and proposals, each from its own generator (seeded by ``seed`` and its name),
    so that anyone can rebuild them from names and shapes: matrices at the scale of their fan-in, LayerNorm
    weights near 1, other vectors near 0, the last box layer at a tenth (refinements of a trained model are small,
    and boxes then stay in the image), proposal boxes spread over the image (centres 0.3-0.7, sizes 0.4-1.0)."""
    weights = {}
    for name, shape in shapes.items():
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        noise = torch.randn(shape, generator=g)
        if name == "init_proposal_boxes.weight":
            u = torch.rand(shape, generator=g)
            value = torch.cat([0.3 + 0.4 * u[:, :2], 0.4 + 0.6 * u[:, 2:]], dim=1)
        elif len(shape) > 1:
            value = noise / math.sqrt(math.prod(shape[1:]))
        elif "norm" in name and name.endswith("weight"):
            value = 1 + 0.2 * noise
        else:
            value = 0.1 * noise
        weights[name] = value * 0.1 if "bboxes_delta." in name else value
    return weights


def official_shapes(model) -> dict[str, tuple]:
    """Names and shapes of the official parameters the fixture covers: every one but the backbone's."""
    return {k: tuple(p.shape) for k, p in model.named_parameters() if not k.startswith("backbone.")}


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
    with torch.no_grad():
        for name, value in seeded_official_weights(official_shapes(model), seed).items():
            model.get_parameter(name).copy_(value)
    return model


def write_fixture(root: Path, arch: str, output: Path, seed: int = 0) -> dict:
    from detectron2.structures import Boxes, Instances

    model = small_official_model(root, seed)
    found = "recursivedet" if hasattr(model.head, "rcnn_head_first") else "sparse_rcnn"
    if found != arch:
        raise SystemExit(f"error: the checkout at {root} is the official {found} code, not {arch}")
    calls = []
    model.head.register_forward_hook(lambda module, args, output: calls.append((args, output)))
    h, w = IMAGE_SIZE
    image = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    instances = Instances((h, w), gt_boxes=Boxes(torch.tensor(GT_BOXES)), gt_classes=torch.tensor(GT_CLASSES))
    batch = [{"image": image, "height": h, "width": w, "instances": instances}]
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
        "gt_boxes": torch.tensor(GT_BOXES),
        "gt_classes": torch.tensor(GT_CLASSES),
        "losses": {k: v.item() for k, v in losses.items()},  # weighted, as the official training sums them
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, output)
    return fixture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", required=True, type=Path)
    parser.add_argument("--arch", required=True, choices=("recursivedet", "sparse_rcnn"))
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    fixture = write_fixture(args.official_root.resolve(), args.arch, args.output, args.seed)
    size = args.output.stat().st_size
    stages = len(fixture["stage_logits"])
    print(f"wrote {args.output} ({size / 1e6:.2f} MB): {stages} stages, total loss {sum(fixture['losses'].values())}")
    return 0


if __name__ == "__main__":
    run_command(main)
