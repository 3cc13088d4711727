"""Agreement with the official Sparse R-CNN and RecursiveDet code without a checkout: fixtures that
``python -m recursivedet.projects.SparseRCNN.side_by_side.golden`` wrote from the official code (official weights
rebuilt from their names, shapes and seed; the FPN maps of one image; every stage's outputs; one training step's
losses). The official weights go through this project's converter into this project's model, whose decoder runs
on the same maps."""

from pathlib import Path

import pytest
import torch
from detectron2.config import instantiate
from model_factory import TinyBackbone, one_thread

from recursivedet import model_zoo
from recursivedet.analysis.golden import seeded_official_weights
from recursivedet.modeling.box_utils import cxcywh_to_xyxy, xyxy_to_cxcywh
from recursivedet.projects.SparseRCNN.convert import convert_official_state_dict

HERE = Path(__file__).resolve().parent


def fixture(arch: str) -> dict:
    return torch.load(HERE / f"golden_{arch}.pth", weights_only=True)


def project_model(golden: dict):
    """This project's model of the fixture's architecture, with the official weights converted (its backbone, which
    the decoder does not use here, is a stand-in)."""
    cfg = model_zoo.get_config(f"models/{golden['arch']}.py")
    cfg.model.backbone = TinyBackbone(cfg.model.decoder.stage.dim)
    cfg.model.num_proposals = golden["sizes"]["num_proposals"]
    cfg.model.decoder.stage.num_classes = golden["sizes"]["num_classes"]
    cfg.model.decoder.stage.dynamic_conv_pe_form = "official"
    model = instantiate(cfg.model)
    official = seeded_official_weights(golden["official_shapes"], golden["seed"])
    missing, unexpected = model.load_state_dict(convert_official_state_dict(official), strict=False)
    assert not unexpected and all(k.startswith("backbone.") for k in missing), (missing, unexpected)
    return model


def decoder_outputs(model, golden: dict):
    """The decoder on the fixture's maps, one image, the image PE over the whole padded map (the official setting)."""
    layout = model.decoder.feature_memory_format
    features = [f.contiguous(memory_format=layout) for f in golden["features"]]
    h, w = golden["image_size"]
    whwh = torch.tensor([[w, h, w, h]], dtype=torch.float32)
    extents = [torch.tensor([list(f.shape[-2:])], dtype=torch.float32) for f in features]
    boxes = model.init_proposal_boxes.weight[None]
    proposal_features = model.init_proposal_features.weight[None]
    return model.decoder(features, boxes, proposal_features, whwh, extents), whwh


@pytest.mark.parametrize("arch", ["recursivedet", "sparse_rcnn"])
def test_stage_outputs_equal_the_official_code(arch):
    golden = fixture(arch)
    with one_thread(), torch.no_grad():
        model = project_model(golden).eval()
        outputs, whwh = decoder_outputs(model, golden)
    assert len(outputs) == len(golden["stage_logits"])
    for t, (logits, boxes) in enumerate(outputs):
        if golden["box_format"] == "xyxy_pixels":
            boxes = cxcywh_to_xyxy(boxes) * whwh[:, None, :]
        torch.testing.assert_close(logits[0], golden["stage_logits"][t], rtol=0, atol=1e-5, msg=f"stage {t + 1}")
        scale = 1.0 if golden["box_format"] == "cxcywh_normalised" else float(whwh.max())
        torch.testing.assert_close(boxes[0], golden["stage_boxes"][t], rtol=0, atol=1e-5 * scale, msg=f"stage {t + 1}")


@pytest.mark.parametrize("arch", ["recursivedet", "sparse_rcnn"])
def test_first_training_step_losses_equal_the_official_code(arch):
    golden = fixture(arch)
    with one_thread():
        model = project_model(golden).train()
        outputs, whwh = decoder_outputs(model, golden)
        boxes = xyxy_to_cxcywh(golden["gt_boxes"] / whwh)
        losses = model.losses(outputs, [{"labels": golden["gt_classes"], "boxes": boxes}])
    # the official class loss is "loss_ce"; the stage suffixes (_0 .. _4, none for the last) are the same
    official = {k.replace("loss_ce", "loss_cls"): v for k, v in golden["losses"].items()}
    assert official.keys() == losses.keys()
    for key, value in official.items():
        assert losses[key].item() == pytest.approx(value, rel=1e-5), key
    assert sum(v.item() for v in losses.values()) == pytest.approx(sum(official.values()), rel=1e-5)
