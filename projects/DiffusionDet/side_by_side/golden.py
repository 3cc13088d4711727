"""Write a small golden fixture of the official DiffusionDet, so that the tests check the agreement without a checkout.

    python -m recursivedet.projects.DiffusionDet.side_by_side.golden --official-root PATH \\
        --output tests/projects/DiffusionDet/golden_diffusiondet.pth

``PATH`` is a checkout of ShoufaChen/DiffusionDet. Its R50-FPN model is built from its own config with 10 proposals
and 3 classes; its head gets the weights of :func:`~recursivedet.analysis.golden.seeded_official_weights`, which the
tests rebuild from the names, shapes and seed the file holds. On one image the file keeps the FPN maps, and two head
calls with everything they received and gave: a sampling step (seeded boxes at t = 600: every stage's logits and
pixel boxes) and one training step (the corrupted ground truth at the official code's own random t, and its weighted
losses). ``tests/projects/DiffusionDet/test_diffusiondet_golden.py`` converts the weights with this project's
converter and runs this project's head on the same inputs. Run it in a process of its own: it imports the official
package.
"""

import sys
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

from .official import OFFICIAL_CONFIG

SIZES = {"num_classes": 3, "num_proposals": 10}
SAMPLING_STEP = 600


def small_official_model(root: Path, seed: int):
    """The official model of the checkout at ``root`` with :data:`SIZES` and the seeded weights."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    sys.path.insert(0, str(root))
    import diffusiondet

    cfg = get_cfg()
    diffusiondet.add_diffusiondet_config(cfg)
    cfg.merge_from_file(str(root / OFFICIAL_CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DiffusionDet.NUM_CLASSES = SIZES["num_classes"]
    cfg.MODEL.DiffusionDet.NUM_PROPOSALS = SIZES["num_proposals"]
    torch.manual_seed(seed)  # the backbone's random weights: only its maps are kept
    model = build_model(cfg)
    set_weights(model, seeded_official_weights(official_shapes(model), seed))
    return model


def write_fixture(root: Path, seed: int = 0) -> dict:
    from torchvision.ops import box_convert

    model = small_official_model(root, seed)
    calls = []
    model.head.register_forward_hook(lambda module, args, output: calls.append((args, output)))
    batch = golden_batch(seed)
    h, w = IMAGE_SIZE
    whwh = torch.tensor([[w, h, w, h]], dtype=torch.float32)
    g = torch.Generator().manual_seed(seed + 7)
    boxes = torch.cat([0.2 + 0.6 * torch.rand(1, SIZES["num_proposals"], 2, generator=g), 0.1 + 0.5 * torch.rand(
        1, SIZES["num_proposals"], 2, generator=g)], dim=-1)  # fmt: skip
    pixel_boxes = box_convert(boxes, "cxcywh", "xyxy") * whwh[:, None, :]
    model.eval()
    with torch.no_grad():
        images, _ = model.preprocess_image(batch)
        maps = model.backbone(images.tensor)
        features = [maps[f] for f in model.in_features]
        logits, stage_boxes = model.head(features, pixel_boxes, torch.tensor([SAMPLING_STEP]), None)
    model.train()
    torch.manual_seed(seed)  # the official training draws its steps and noise from the global generator
    losses = model(batch)
    (args, _) = calls[-1]
    train_features, train_boxes, train_t = args[0], args[1], args[2]
    assert all(torch.equal(a, b) for a, b in zip(features, train_features, strict=True))  # frozen norms
    fixture = {
        "arch": "diffusiondet",
        "sizes": SIZES,
        "seed": seed,
        "official_shapes": official_shapes(model),
        "image_size": IMAGE_SIZE,
        "features": [f.detach().clone() for f in features],
        "sampling": {
            "boxes": pixel_boxes[0].clone(),  # (N, 4) pixel xyxy
            "t": SAMPLING_STEP,
            "stage_logits": logits[:, 0].clone(),  # (T, N, K)
            "stage_boxes": stage_boxes[:, 0].clone(),  # (T, N, 4) pixel xyxy
        },
        "training": {"boxes": train_boxes[0].detach().clone(), "t": int(train_t[0])},
        "gt_boxes": batch[0]["instances"].gt_boxes.tensor.clone(),
        "gt_classes": batch[0]["instances"].gt_classes.clone(),
        "losses": {k: v.item() for k, v in losses.items()},  # weighted, as the official training sums them
    }
    return fixture


def main(argv=None) -> int:
    return fixture_command(__doc__, write_fixture, argv)


if __name__ == "__main__":
    run_command(main)
