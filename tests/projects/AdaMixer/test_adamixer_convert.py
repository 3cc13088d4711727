"""Official AdaMixer checkpoints (mmdet names): recognised by the AdaMixer converter only, converted and loaded
strictly; the other hosts' converters leave them alone and AdaMixer's leaves theirs; a checkpoint of another host
given to an AdaMixer config is refused with an error naming the keys that do not fit."""

import re

import pytest
import torch
from detectron2.config import instantiate
from model_factory import tiny_adamixer, tiny_adamixer_config, tiny_diffusiondet, tiny_model

from recursivedet.convert import convert_checkpoint, official_converters
from recursivedet.engine.checkpoint import Checkpointer, CheckpointError
from recursivedet.errors import CheckpointFormatError
from recursivedet.model_zoo import get_config
from recursivedet.projects.AdaMixer.convert import convert_official_state_dict, recognise

# This project's names -> the official code's, written out independently of the converter.
_STAGE = [
    ("self_attn.iof_tau", "iof_tau"),
    ("self_attn.attn.", "attention.attn."),
    ("self_attn.norm.", "attention_norm."),
    ("linear1.", "ffn.layers.0.0."),
    ("linear2.", "ffn.layers.1."),
    ("norm3.", "ffn_norm."),
    ("cls_layers.", "cls_fcs."),
    ("reg_layers.", "reg_fcs."),
    ("class_logits.", "fc_cls."),
    ("box_delta.", "fc_reg."),
    ("sampling.offset_generator.", "sampling_n_mixing.sampling_offset_generator.0."),
    ("norm2.", "sampling_n_mixing.norm."),
    ("adaptive_mixing.dynamic_layer.", "sampling_n_mixing.adaptive_mixing.parameter_generator.0."),
    ("adaptive_mixing.out_layer.", "sampling_n_mixing.adaptive_mixing.out_proj."),
]


def official_name(key: str) -> str:
    if m := re.match(r"decoder\.stages\.(\d+)\.(.*)", key):
        rest = next(new + m.group(2)[len(old) :] for old, new in _STAGE if m.group(2).startswith(old))
        return f"roi_head.bbox_head.{m.group(1)}.{rest}"
    if key.startswith("init_proposal_boxes."):
        return key.replace("init_proposal_boxes.", "rpn_head.init_proposal_bboxes.")
    if key.startswith("init_proposal_features."):
        return key.replace("init_proposal_features.", "rpn_head.init_content_features.")
    if m := re.match(r"backbone\.lateral_convs\.(\d)\.(.*)", key):
        return f"neck.lateral_convs.{m.group(1)}.conv.{m.group(2)}"
    if key.startswith("backbone.norm."):
        return key.replace("backbone.norm.", "neck.gn_out.")
    key = key.replace("backbone.bottom_up.stem.conv1.norm.", "backbone.bn1.")
    key = key.replace("backbone.bottom_up.stem.", "backbone.")
    if m := re.match(r"backbone\.bottom_up\.res(\d)\.(\d+)\.(.*)", key):
        rest = re.sub(r"conv(\d)\.norm\.", r"bn\1.", m.group(3))
        rest = rest.replace("shortcut.norm.", "downsample.1.").replace("shortcut.", "downsample.0.")
        return f"backbone.layer{int(m.group(1)) - 1}.{m.group(2)}.{rest}"
    return key


def resnet_adamixer():
    """The tiny decoder on the real backbone and neck (ResNet-18 with batch norms, channel mapping)."""
    cfg = tiny_adamixer_config()
    full = get_config("AdaMixer/models/adamixer.py")
    cfg.model.backbone = full.model.backbone
    cfg.model.backbone.bottom_up.stages.depth = 18
    del cfg.model.backbone.bottom_up.stages.stride_in_1x1  # basic blocks have no 1x1 conv
    cfg.model.backbone.norm_groups = 8
    cfg.model.backbone.out_channels = "${..decoder.stage.dim}"
    torch.manual_seed(0)
    return instantiate(cfg.model)


def test_official_checkpoint_converts_and_loads_strictly(tmp_path):
    model = resnet_adamixer()
    ours = model.state_dict()
    official = {official_name(k): v.clone() for k, v in ours.items()}
    assert "backbone.layer2.0.downsample.1.running_var" in official and "backbone.bn1.weight" in official
    assert recognise(official) == "adamixer"
    arch, converted, config = convert_checkpoint(official)
    assert arch == "adamixer" and config == "AdaMixer/models/adamixer.py"
    assert set(converted) == set(ours)
    assert all(torch.equal(converted[k], ours[k]) for k in ours)
    path = tmp_path / "converted.pth"
    torch.save({"model": converted}, path)
    Checkpointer(model, strict=True).load(str(path), checkpointables=[])


def test_converters_claim_only_their_own_format():
    from recursivedet.projects.DiffusionDet.convert import recognise as recognise_diffusiondet
    from recursivedet.projects.SparseRCNN.convert import recognise as recognise_sparse_rcnn

    assert "recursivedet.projects.AdaMixer.convert" in [c.__name__ for c in official_converters()]
    adamixer = {official_name(k): v for k, v in tiny_adamixer().state_dict().items()}
    assert recognise_sparse_rcnn(adamixer) is None and recognise_diffusiondet(adamixer) is None
    assert recognise({"head.head_series.0.norm1.weight": torch.zeros(1)}) is None
    assert recognise({"head.time_mlp.1.weight": torch.zeros(1)}) is None
    with pytest.raises(CheckpointFormatError, match="AdaMixer"):
        convert_official_state_dict({"head.head_series.0.norm1.weight": torch.zeros(1)})
    adamixer = {k: v for k, v in adamixer.items() if not k.startswith("backbone.")}  # not a ResNet
    adamixer["roi_head.bbox_head.0.something_new.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError, match="something_new"):
        convert_official_state_dict(adamixer)


@pytest.mark.parametrize("other", ["sparse_rcnn", "diffusiondet"])
def test_checkpoint_of_another_host_is_refused(tmp_path, other):
    source = tiny_model("sparse_rcnn") if other == "sparse_rcnn" else tiny_diffusiondet()
    path = tmp_path / "other.pth"
    torch.save({"model": source.state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit the model.*missing.*unexpected"):
        Checkpointer(tiny_adamixer(), strict=True).load(str(path), checkpointables=[])
    # and the other way round
    torch.save({"model": tiny_adamixer().state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit the model.*missing.*unexpected"):
        Checkpointer(source, strict=True).load(str(path), checkpointables=[])
