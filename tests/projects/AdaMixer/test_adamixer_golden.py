"""Agreement with the official AdaMixer without a checkout: a fixture that
``python -m recursivedet.projects.AdaMixer.side_by_side.golden`` wrote from the official code (official weights
rebuilt from their names, shapes and seed; the neck's maps of one image; every stage's outputs; one training step's
losses). The official weights go through this project's converter into this project's model, whose decoder runs on
the same maps."""

from pathlib import Path

import pytest
import torch
from detectron2.config import instantiate
from model_factory import TinyBackbone, one_thread

from recursivedet import model_zoo
from recursivedet.analysis.golden import seeded_official_weights
from recursivedet.modeling.box_utils import xyxy_to_cxcywh
from recursivedet.projects.AdaMixer.convert import convert_official_state_dict
from recursivedet.projects.AdaMixer.modeling.boxes import xyzr_to_xyxy

GOLDEN = Path(__file__).resolve().parent / "golden_adamixer.pth"
OFFICIAL_LOSS = {"loss_cls": "loss_cls", "loss_bbox": "loss_bbox", "loss_iou": "loss_giou"}


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def project_model(golden: dict):
    """This project's AdaMixer with the official weights converted (its backbone, unused here, a stand-in)."""
    cfg = model_zoo.get_config("AdaMixer/models/adamixer.py")
    cfg.model.backbone = TinyBackbone(cfg.model.decoder.stage.dim)
    cfg.model.num_proposals = golden["sizes"]["num_proposals"]
    cfg.model.decoder.stage.num_classes = golden["sizes"]["num_classes"]
    model = instantiate(cfg.model)
    official = seeded_official_weights(golden["official_shapes"], golden["seed"], tuple(golden["small_layers"]))
    missing, unexpected = model.load_state_dict(convert_official_state_dict(official), strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing), (missing, unexpected)
    return model


def pixel_stage_outputs(model, golden: dict):
    """The decoder on the fixture's maps: list over stages of (logits (1, N, K), boxes (1, N, 4) pixel xyxy)."""
    h, w = golden["image_size"]
    whwh = torch.tensor([[w, h, w, h]], dtype=torch.float32)
    content, xyzr = model.initial_queries(whwh)
    layout = model.decoder.feature_memory_format
    features = [f.contiguous(memory_format=layout) for f in golden["features"]]
    outputs = model.decoder(features, model.strides, content, xyzr, whwh)
    return [(logits, xyzr_to_xyxy(positions)) for logits, positions in outputs], whwh


def test_stage_outputs_equal_the_official_code(golden):
    with one_thread(), torch.no_grad():
        outputs, _ = pixel_stage_outputs(project_model(golden).eval(), golden)
    assert len(outputs) == len(golden["stage_logits"])
    for t, (logits, boxes) in enumerate(outputs):
        torch.testing.assert_close(logits[0], golden["stage_logits"][t], rtol=0, atol=1e-5, msg=f"stage {t + 1}")
        torch.testing.assert_close(boxes[0], golden["stage_boxes"][t], rtol=0, atol=1e-3, msg=f"stage {t + 1}")


def test_first_training_step_losses_equal_the_official_code(golden):
    with one_thread():
        model = project_model(golden).train()
        outputs, whwh = pixel_stage_outputs(model, golden)
        normalised = [(logits, xyxy_to_cxcywh(boxes / whwh[:, None, :])) for logits, boxes in outputs]
        targets = [{"labels": golden["gt_classes"], "boxes": xyxy_to_cxcywh(golden["gt_boxes"] / whwh)}]
        losses = model.losses(normalised, targets)
    last = len(outputs) - 1
    official = {}
    for key, value in golden["losses"].items():  # "stage3_loss_iou" -> "loss_giou_3"; no suffix for the last
        stage, name = key.split("_", 1)
        t = int(stage.removeprefix("stage"))
        official[OFFICIAL_LOSS[name] + ("" if t == last else f"_{t}")] = value
    assert official.keys() == losses.keys()
    for key, value in official.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5), key
