"""Official DiffusionDet checkpoints: recognised (before the Sparse R-CNN converter, whose key names its head
keeps), converted and loaded strictly; checkpoints of one host given to the other's config are refused with
an error naming the keys that do not fit."""

import pytest
import torch
from model_factory import tiny_diffusiondet

from recursivedet.convert import convert_checkpoint, official_converters
from recursivedet.engine.checkpoint import Checkpointer, CheckpointError
from recursivedet.errors import CheckpointFormatError
from recursivedet.projects.DiffusionDet.convert import (
    SCHEDULE_BUFFERS,
    convert_official_state_dict,
    recognise,
)
from recursivedet.projects.DiffusionDet.modeling.diffusion import cosine_alphas_cumprod
from recursivedet.projects.SparseRCNN.convert import recognise as recognise_sparse_rcnn

SIZES = {"num_stages": 6, "dim": 32, "num_classes": 3, "ffn_dim": 64, "dynamic_dim": 8}


def official_key_shapes(
    num_stages: int = 6,
    dim: int = 256,
    num_classes: int = 80,
    ffn_dim: int = 2048,
    dynamic_dim: int = 64,
    pooler_resolution: int = 7,
) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the official head's parameters and buffers (``DynamicHead``, ``RCNNHead``,
    ``DynamicConv`` and the detector's schedule buffers), the backbone excluded."""
    shapes = {name: (1000,) for name in SCHEDULE_BUFFERS}
    time_dim = 4 * dim
    shapes.update(
        {
            "head.time_mlp.1.weight": (time_dim, dim),
            "head.time_mlp.1.bias": (time_dim,),
            "head.time_mlp.3.weight": (time_dim, time_dim),
            "head.time_mlp.3.bias": (time_dim,),
        }
    )
    for i in range(num_stages):
        p = f"head.head_series.{i}."
        layers = {
            "self_attn.in_proj_weight": (3 * dim, dim),
            "self_attn.in_proj_bias": (3 * dim,),
            "self_attn.out_proj.weight": (dim, dim),
            "self_attn.out_proj.bias": (dim,),
            "inst_interact.dynamic_layer.weight": (2 * dim * dynamic_dim, dim),
            "inst_interact.dynamic_layer.bias": (2 * dim * dynamic_dim,),
            "inst_interact.norm1.weight": (dynamic_dim,),
            "inst_interact.norm1.bias": (dynamic_dim,),
            "inst_interact.norm2.weight": (dim,),
            "inst_interact.norm2.bias": (dim,),
            "inst_interact.out_layer.weight": (dim, dim * pooler_resolution**2),
            "inst_interact.out_layer.bias": (dim,),
            "inst_interact.norm3.weight": (dim,),
            "inst_interact.norm3.bias": (dim,),
            "linear1.weight": (ffn_dim, dim),
            "linear1.bias": (ffn_dim,),
            "linear2.weight": (dim, ffn_dim),
            "linear2.bias": (dim,),
            "norm1.weight": (dim,),
            "norm1.bias": (dim,),
            "norm2.weight": (dim,),
            "norm2.bias": (dim,),
            "norm3.weight": (dim,),
            "norm3.bias": (dim,),
            "block_time_mlp.1.weight": (2 * dim, time_dim),
            "block_time_mlp.1.bias": (2 * dim,),
            "cls_module.0.weight": (dim, dim),
            "cls_module.1.weight": (dim,),
            "cls_module.1.bias": (dim,),
            "class_logits.weight": (num_classes, dim),
            "class_logits.bias": (num_classes,),
            "bboxes_delta.weight": (4, dim),
            "bboxes_delta.bias": (4,),
        }
        for block in range(3):
            layers[f"reg_module.{3 * block}.weight"] = (dim, dim)
            layers[f"reg_module.{3 * block + 1}.weight"] = (dim,)
            layers[f"reg_module.{3 * block + 1}.bias"] = (dim,)
        shapes.update({p + k: v for k, v in layers.items()})
    return shapes


def official_head_state_dict(**sizes) -> dict[str, torch.Tensor]:
    """Random tensors under the official head's names and shapes (:func:`official_key_shapes`), for tests."""
    return {k: torch.randn(v) for k, v in official_key_shapes(**sizes).items()}


def official_checkpoint(model) -> dict:
    """An official DiffusionDet state dict of the tiny model's sizes: the head under the official names and the
    backbone's own keys (detectron2 names them the same in both codebases)."""
    state = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("backbone.")}
    state.update(official_head_state_dict(**SIZES))
    state["alphas_cumprod"] = cosine_alphas_cumprod(1000).float()
    return state


def test_official_checkpoint_converts_and_loads_strictly(tmp_path):
    model = tiny_diffusiondet()
    official = official_checkpoint(model)
    assert recognise(official) == "diffusiondet"
    assert "recursivedet.projects.DiffusionDet.convert" in [c.__name__ for c in official_converters()]
    assert recognise_sparse_rcnn(official) is None  # the converters' order does not matter
    arch, converted, config = convert_checkpoint(official)
    assert arch == "diffusiondet" and config == "DiffusionDet/models/diffusiondet.py"
    assert not any(k in converted for k in SCHEDULE_BUFFERS)
    assert set(converted) == set(model.state_dict())
    path = tmp_path / "converted.pth"
    torch.save({"model": converted}, path)
    Checkpointer(model, strict=True).load(str(path), checkpointables=[])
    state = model.state_dict()
    q, k, v = official["head.head_series.2.self_attn.in_proj_weight"].chunk(3)
    assert torch.equal(state["decoder.stages.2.self_attn.q_content_proj.weight"], q)
    assert torch.equal(state["decoder.stages.2.self_attn.v_proj.weight"], v)
    assert torch.equal(state["time_mlp.layers.2.weight"], official["head.time_mlp.3.weight"])
    assert torch.equal(
        state["decoder.stages.5.condition_mlp.1.bias"], official["head.head_series.5.block_time_mlp.1.bias"]
    )
    assert torch.equal(
        state["decoder.stages.0.reg_layers.7.weight"], official["head.head_series.0.reg_module.7.weight"]
    )


def test_parameter_names_cover_the_official_r50_count():
    """The official names and shapes above add up to the official R50 head: 110,673,336 - backbone."""
    shapes = official_key_shapes()
    params = sum(torch.Size(s).numel() for k, s in shapes.items() if k not in SCHEDULE_BUFFERS)
    assert params == 6 * 13_760_212 + 1_312_768


def test_other_checkpoints_are_not_diffusiondet():
    from recursivedet.projects.SparseRCNN.convert import recognise as recognise_sparse_rcnn

    assert recognise({"head.head_series.0.norm1.weight": torch.zeros(1)}) is None  # Sparse R-CNN
    # and the Sparse R-CNN converter leaves DiffusionDet alone (it keeps Sparse R-CNN's stage names)
    assert recognise_sparse_rcnn(official_head_state_dict(**SIZES)) is None
    with pytest.raises(CheckpointFormatError, match="DiffusionDet"):
        convert_official_state_dict({"head.rcnn_head.norm1.weight": torch.zeros(1)})
    bad = official_head_state_dict(**SIZES)
    bad["head.head_series.0.something_new.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError, match="something_new"):
        convert_official_state_dict(bad)


def test_checkpoint_of_the_other_host_is_refused(tmp_path):
    from model_factory import tiny_model

    diffusiondet, sparse_rcnn = tiny_diffusiondet(), tiny_model("sparse_rcnn")
    for source, target, named in [
        (diffusiondet, sparse_rcnn, "time_mlp"),
        (sparse_rcnn, diffusiondet, "init_proposal"),
    ]:
        path = tmp_path / "other.pth"
        torch.save({"model": source.state_dict()}, path)
        with pytest.raises(CheckpointError, match=named):
            Checkpointer(target, strict=True).load(str(path), checkpointables=[])
