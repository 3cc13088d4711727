"""Write a small golden fixture of the official AdaMixer, so that the tests check the agreement without a checkout.

    PYTHONPATH=/path/to/pure-python-mmcv python -m recursivedet.projects.AdaMixer.side_by_side.golden \\
        --official-root PATH --output tests/projects/AdaMixer/golden_adamixer.pth

``PATH`` is a checkout of MCG-NJU/AdaMixer (an mmdet 2.12 tree; mmcv 1.3 as for the live comparison, see
:mod:`.official_import`). Its R50 model is built from its own config with 10 queries and 3 classes; its query
generator and decoder get the weights of :func:`~recursivedet.analysis.golden.seeded_official_weights`, which the
tests rebuild from the names, shapes and seed the file holds. On one image the file keeps the neck's maps, every
stage's logits and pixel boxes, and the weighted losses of one training step on three ground-truth boxes.
``tests/projects/AdaMixer/test_adamixer_golden.py`` converts the weights with this project's converter and runs this
project's decoder on the same maps. Run it in a process of its own: it imports the official package.
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

from .official import official_batch, stage_outputs
from .official_import import OFFICIAL_CONFIG, import_official

SIZES = {"num_classes": 3, "num_proposals": 10}
SKIPPED = ("backbone.", "neck.")  # the fixture keeps the neck's maps instead
# The box regression and the generators of the sampling offsets and mixing parameters, which the official code
# starts at zero: at full scale they would move boxes and points out of the image.
SMALL_LAYERS = ("fc_reg.", "sampling_offset_generator.", "parameter_generator.")


def small_official_model(root: Path, seed: int):
    """The official model of the checkout at ``root`` with :data:`SIZES` and the seeded weights."""
    import warnings

    warnings.filterwarnings("ignore")
    config = import_official(root)
    from mmdet.models import build_detector

    cfg = config.fromfile(str(root / OFFICIAL_CONFIG))
    cfg.model.pretrained = None
    cfg.model.rpn_head.num_query = SIZES["num_proposals"]
    cfg.model.test_cfg.rcnn.max_per_img = SIZES["num_proposals"]
    for head in cfg.model.roi_head.bbox_head:
        head.num_classes = SIZES["num_classes"]
    torch.manual_seed(seed)  # the backbone's random weights: only the neck's maps are kept
    model = build_detector(cfg.model)
    model.init_weights()
    set_weights(model, seeded_official_weights(official_shapes(model, SKIPPED), seed, SMALL_LAYERS))
    return model


def write_fixture(root: Path, seed: int = 0) -> dict:
    model = small_official_model(root, seed)
    (sample,) = golden_batch(seed)
    image, instances = sample["image"], sample["instances"]
    model.eval()
    with torch.no_grad():
        batch, metas = official_batch([image])
        features = model.extract_feat(batch)
        logits, boxes = stage_outputs(model, image)
    model.train()
    losses = model.forward_train(batch, metas, [instances.gt_boxes.tensor], [instances.gt_classes])
    fixture = {
        "arch": "adamixer",
        "sizes": SIZES,
        "seed": seed,
        "official_shapes": official_shapes(model, SKIPPED),
        "small_layers": SMALL_LAYERS,
        "image_size": IMAGE_SIZE,
        "features": [f.clone() for f in features],
        "stage_logits": logits.clone(),  # (T, N, K)
        "stage_boxes": boxes.clone(),  # (T, N, 4) pixel xyxy
        "gt_boxes": instances.gt_boxes.tensor.clone(),
        "gt_classes": instances.gt_classes.clone(),
        # weighted, as the official training sums them; the query generator reports no loss
        "losses": {k: v.item() for k, v in losses.items() if "loss" in k},
    }
    return fixture


def main(argv=None) -> int:
    return fixture_command(__doc__, write_fixture, argv)


if __name__ == "__main__":
    run_command(main)
