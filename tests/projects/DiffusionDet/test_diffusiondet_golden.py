"""Agreement with the official DiffusionDet without a checkout: a fixture that
``python -m recursivedet.projects.DiffusionDet.side_by_side.golden`` wrote from the official code (official weights
rebuilt from their names, shapes and seed; the FPN maps of one image; a sampling step's stage outputs; a training
step's inputs and losses). The official weights go through this project's converter into this project's model, whose
head runs on the same inputs."""

from pathlib import Path

import pytest
import torch
from detectron2.config import instantiate
from model_factory import TinyBackbone, one_thread

from recursivedet import model_zoo
from recursivedet.analysis.golden import seeded_official_weights
from recursivedet.modeling.box_utils import cxcywh_to_xyxy, xyxy_to_cxcywh
from recursivedet.projects.DiffusionDet.convert import convert_official_state_dict

GOLDEN = Path(__file__).resolve().parent / "golden_diffusiondet.pth"


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(GOLDEN, weights_only=True)


def project_model(golden: dict):
    """This project's DiffusionDet with the official weights converted (its backbone, unused here, a stand-in)."""
    cfg = model_zoo.get_config("DiffusionDet/models/diffusiondet.py")
    cfg.model.backbone = TinyBackbone(cfg.model.decoder.stage.dim)
    cfg.model.num_proposals = golden["sizes"]["num_proposals"]
    cfg.model.decoder.stage.num_classes = golden["sizes"]["num_classes"]
    model = instantiate(cfg.model)
    official = seeded_official_weights(golden["official_shapes"], golden["seed"])
    missing, unexpected = model.load_state_dict(convert_official_state_dict(official), strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing), (missing, unexpected)
    return model


def head(model, golden: dict, pixel_boxes: torch.Tensor, t: int):
    """This project's head on the fixture's maps and (N, 4) pixel xyxy boxes at step t."""
    layout = model.decoder.feature_memory_format
    features = [f.contiguous(memory_format=layout) for f in golden["features"]]
    h, w = golden["image_size"]
    whwh = torch.tensor([[w, h, w, h]], dtype=torch.float32)
    boxes = xyxy_to_cxcywh(pixel_boxes[None] / whwh[:, None, :])
    return model.head(features, boxes, torch.tensor([t]), whwh, None), whwh


def test_sampling_step_equals_the_official_code(golden):
    sampling = golden["sampling"]
    with one_thread(), torch.no_grad():
        model = project_model(golden).eval()
        outputs, whwh = head(model, golden, sampling["boxes"], sampling["t"])
    assert len(outputs) == len(sampling["stage_logits"])
    for t, (logits, boxes) in enumerate(outputs):
        torch.testing.assert_close(logits[0], sampling["stage_logits"][t], rtol=0, atol=1e-5, msg=f"stage {t + 1}")
        pixel = (cxcywh_to_xyxy(boxes) * whwh[:, None, :])[0]
        torch.testing.assert_close(pixel, sampling["stage_boxes"][t], rtol=0, atol=1e-3, msg=f"stage {t + 1}")


def test_first_training_step_losses_equal_the_official_code(golden):
    training = golden["training"]
    with one_thread():
        model = project_model(golden).train()
        outputs, whwh = head(model, golden, training["boxes"], training["t"])
        targets = [{"labels": golden["gt_classes"], "boxes": xyxy_to_cxcywh(golden["gt_boxes"] / whwh)}]
        losses = model.losses(outputs, targets)
    # the official class loss is "loss_ce"; the stage suffixes (_0 .. _4, none for the last) are the same
    official = {k.replace("loss_ce", "loss_cls"): v for k, v in golden["losses"].items()}
    assert official.keys() == losses.keys()
    for key, value in official.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5), key
