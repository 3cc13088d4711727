"""What the golden fixtures of the official codes share (``projects/<Host>/side_by_side/golden.py`` writes one
from an official checkout, ``tests/projects/<Host>/test_*_golden.py`` checks this project against it without one):
the official weights, named instead of stored (each tensor from its own generator, seeded by the fixture's seed and
the tensor's name, so that a test rebuilds them from names and shapes alone), and the image and boxes they run on."""

import math
import zlib

import torch

SMALL_LAYERS = ("bboxes_delta.",)
"""Official layers whose weights :func:`seeded_official_weights` scales to a tenth by default: Sparse R-CNN's and
DiffusionDet's last box layer."""


def seeded_official_weights(
    shapes: dict[str, tuple], seed: int, small: tuple[str, ...] = SMALL_LAYERS
) -> dict[str, torch.Tensor]:
    """Matrices at the scale of their fan-in, LayerNorm weights near 1, other vectors near 0, the layers named in
    ``small`` at a tenth (box refinements of a trained model are small, and boxes then stay in the image), learnable
    proposal boxes spread over the image (centres 0.3-0.7, sizes 0.4-1.0): no symmetric default hides a mistake
    such as swapped q/k/v biases or a mirrored box coordinate."""
    weights = {}
    for name, shape in shapes.items():
        g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        noise = torch.randn(shape, generator=g)
        if name.endswith(("init_proposal_boxes.weight", "init_proposal_bboxes.weight")):  # Sparse R-CNN, AdaMixer
            u = torch.rand(shape, generator=g)
            value = torch.cat([0.3 + 0.4 * u[:, :2], 0.4 + 0.6 * u[:, 2:]], dim=1)
        elif len(shape) > 1:
            value = noise / math.sqrt(math.prod(shape[1:]))
        elif "norm" in name and name.endswith("weight"):
            value = 1 + 0.2 * noise
        else:
            value = 0.1 * noise
        weights[name] = value * 0.1 if any(s in name for s in small) else value
    return weights


def official_shapes(model, skip: tuple[str, ...] = ("backbone.",)) -> dict[str, tuple]:
    """Names and shapes of ``model``'s parameters but those under ``skip`` (the backbone: a fixture keeps its maps)."""
    return {k: tuple(p.shape) for k, p in model.named_parameters() if not k.startswith(skip)}


def set_weights(model, weights: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, value in weights.items():
            model.get_parameter(name).copy_(value)


IMAGE_SIZE = (64, 96)
GT_BOXES = [[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0], [50.0, 30.0, 70.0, 62.0]]  # pixel xyxy
GT_CLASSES = [0, 2, 1]


def golden_batch(seed: int) -> list[dict]:
    """One random (3, 64, 96) uint8 image with three ground-truth boxes, as detectron2's input."""
    from detectron2.structures import Boxes, Instances

    h, w = IMAGE_SIZE
    image = torch.randint(0, 256, (3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    instances = Instances((h, w), gt_boxes=Boxes(torch.tensor(GT_BOXES)), gt_classes=torch.tensor(GT_CLASSES))
    return [{"image": image, "height": h, "width": w, "instances": instances}]


def fixture_command(doc: str, write_fixture, argv=None, archs: tuple[str, ...] = ()) -> int:
    """The command of a project's fixture writer: ``--official-root``, ``--output``, ``--seed`` (and ``--arch``
    among ``archs`` when the checkout may be of several codes); ``write_fixture(root, seed[, arch])`` returns
    the fixture, which is saved to ``--output`` and summed up in one line."""
    import argparse
    from pathlib import Path

    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official-root", required=True, type=Path)
    if archs:
        parser.add_argument("--arch", required=True, choices=archs)
    parser.add_argument("--output", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    extra = {"arch": args.arch} if archs else {}
    fixture = write_fixture(args.official_root.resolve(), args.seed, **extra)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fixture, args.output)
    total = sum(fixture["losses"].values())
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.2f} MB): total loss {total}")
    return 0
