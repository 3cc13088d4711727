"""The official-checkpoint converter against the real official key names and shapes.

The official names and shapes of one decoder stage of each architecture are stored below as data (from
the official R50-FPN, 100-proposal models). Checkpoints with those names are generated at a small width,
converted, and loaded strictly into this project's model; every tensor is then looked up where it
must land. The full-width shapes are checked against this project's stage without allocating memory.
"""

import hashlib

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from omegaconf import OmegaConf

from recursivedet.convert import main as convert_main
from recursivedet.errors import CheckpointFormatError, run_command
from recursivedet.modeling.stage import DecoderStage
from recursivedet.projects.SparseRCNN.convert import convert_official_state_dict, detect_official_architecture

CONFIG_DIR = (
    __import__("pathlib").Path(__file__).resolve().parents[3] / "projects" / "SparseRCNN" / "configs" / "models"
)

# One stage of the official Sparse R-CNN (head.head_series.<i>.*, i = 0..5).
SPARSE_RCNN_STAGE = """
self_attn.in_proj_weight 768x256
self_attn.in_proj_bias 768
self_attn.out_proj.weight 256x256
self_attn.out_proj.bias 256
inst_interact.dynamic_layer.weight 32768x256
inst_interact.dynamic_layer.bias 32768
inst_interact.norm1.weight 64
inst_interact.norm1.bias 64
inst_interact.norm2.weight 256
inst_interact.norm2.bias 256
inst_interact.out_layer.weight 256x12544
inst_interact.out_layer.bias 256
inst_interact.norm3.weight 256
inst_interact.norm3.bias 256
linear1.weight 2048x256
linear1.bias 2048
linear2.weight 256x2048
linear2.bias 256
norm1.weight 256
norm1.bias 256
norm2.weight 256
norm2.bias 256
norm3.weight 256
norm3.bias 256
cls_module.0.weight 256x256
cls_module.1.weight 256
cls_module.1.bias 256
reg_module.0.weight 256x256
reg_module.1.weight 256
reg_module.1.bias 256
reg_module.3.weight 256x256
reg_module.4.weight 256
reg_module.4.bias 256
reg_module.6.weight 256x256
reg_module.7.weight 256
reg_module.7.bias 256
class_logits.weight 80x256
class_logits.bias 80
bboxes_delta.weight 4x256
bboxes_delta.bias 4
"""

# One stage of the official RecursiveDet (head.rcnn_head_first.* and head.rcnn_head.* alike).
RECURSIVEDET_STAGE = """
pos_xywh.layers.0.weight 256x512
pos_xywh.layers.0.bias 256
pos_xywh.layers.1.weight 256x256
pos_xywh.layers.1.bias 256
sa_qcontent_proj.weight 256x256
sa_qcontent_proj.bias 256
sa_qpos_proj.weight 256x256
sa_qpos_proj.bias 256
sa_kcontent_proj.weight 256x256
sa_kcontent_proj.bias 256
sa_kpos_proj.weight 256x256
sa_kpos_proj.bias 256
sa_v_proj.weight 256x256
sa_v_proj.bias 256
self_attn.out_proj.weight 256x256
self_attn.out_proj.bias 256
inst_interact.dynamic_layer.weight 32768x256
inst_interact.dynamic_layer.bias 32768
inst_interact.query_scale.layers.0.weight 256x256
inst_interact.query_scale.layers.0.bias 256
inst_interact.query_scale.layers.1.weight 256x256
inst_interact.query_scale.layers.1.bias 256
inst_interact.ref_point_head.layers.0.weight 256x256
inst_interact.ref_point_head.layers.0.bias 256
inst_interact.ref_point_head.layers.1.weight 2x256
inst_interact.ref_point_head.layers.1.bias 2
inst_interact.ca_qpos_proj.weight 256x256
inst_interact.ca_qpos_proj.bias 256
inst_interact.ca_kpos_proj.weight 256x256
inst_interact.ca_kpos_proj.bias 256
inst_interact.norm1.weight 64
inst_interact.norm1.bias 64
inst_interact.norm2.weight 256
inst_interact.norm2.bias 256
inst_interact.out_layer.weight 256x12544
inst_interact.out_layer.bias 256
inst_interact.norm3.weight 256
inst_interact.norm3.bias 256
linear1.weight 2048x256
linear1.bias 2048
linear2.weight 256x2048
linear2.bias 256
norm1.weight 256
norm1.bias 256
norm2.weight 256
norm2.bias 256
norm3.weight 256
norm3.bias 256
cls_module.0.weight 256x256
cls_module.1.weight 256
cls_module.1.bias 256
reg_module.0.weight 256x256
reg_module.1.weight 256
reg_module.1.bias 256
reg_module.3.weight 256x256
reg_module.4.weight 256
reg_module.4.bias 256
reg_module.6.weight 256x256
reg_module.7.weight 256
reg_module.7.bias 256
class_logits.weight 80x256
class_logits.bias 80
bboxes_delta.weight 4x256
bboxes_delta.bias 4
"""

# Both official models hold these two plus 281 backbone tensors (detectron2's R50-FPN names): the
# digest is SHA-256 of their sorted "name shape" lines, shapes written as "256x64x1x1".
OFFICIAL_TOP = {"init_proposal_features.weight": (100, 256), "init_proposal_boxes.weight": (100, 4)}
OFFICIAL_BACKBONE = (281, "6ce1235f51920c2cd30f2c76892bfe2e433e3c5a1921794f1c1542736f710b85")

# Where each official stage tensor must land (written independently of the converter's own table).
EXPECTED_PREFIXES = {
    "pos_xywh.": "box_pos_mlp.",
    "sa_qcontent_proj.": "self_attn.q_content_proj.",
    "sa_qpos_proj.": "self_attn.q_pos_proj.",
    "sa_kcontent_proj.": "self_attn.k_content_proj.",
    "sa_kpos_proj.": "self_attn.k_pos_proj.",
    "sa_v_proj.": "self_attn.v_proj.",
    "self_attn.out_proj.": "self_attn.out_proj.",
    "inst_interact.query_scale.": "dynamic_conv.center_scale.",
    "inst_interact.ref_point_head.": "dynamic_conv.size_ref.",
    "inst_interact.ca_qpos_proj.": "dynamic_conv.roi_pos_proj.",
    "inst_interact.ca_kpos_proj.": "dynamic_conv.kernel_pos_proj.",
    "inst_interact.": "dynamic_conv.",
    "cls_module.": "cls_layers.",
    "reg_module.": "reg_layers.",
    "bboxes_delta.": "box_delta.",
}
# nn.MultiheadAttention's packed projection, rows [q; k; v].
IN_PROJ = ("self_attn.q_content_proj", "self_attn.k_content_proj", "self_attn.v_proj")

# Small test width: model width C, FFN F, dynamic width D, classes K, proposals N, RoI size R.
C, F, D, K, N, R = 32, 48, 8, 3, 6, 7
OFFICIAL_TO_SMALL = {256: C, 512: 2 * C, 768: 3 * C, 2048: F, 64: D, 12544: C * R * R, 32768: 2 * C * D, 80: K}


def parse_stage(text: str) -> dict[str, tuple[int, ...]]:
    return {
        name: tuple(int(v) for v in shape.split("x"))
        for name, shape in (line.split() for line in text.split("\n") if line)
    }


STAGES = {"sparse_rcnn": parse_stage(SPARSE_RCNN_STAGE), "recursivedet": parse_stage(RECURSIVEDET_STAGE)}


def official_stage_prefixes(arch: str) -> list[tuple[str, int]]:
    """(official key prefix, index of this project's stage module it must land in)."""
    if arch == "sparse_rcnn":
        return [(f"head.head_series.{i}.", i) for i in range(6)]
    return [("head.rcnn_head_first.", 0), ("head.rcnn_head.", 1)]


def expected_targets(official_suffix: str, stage: int) -> list[tuple[str, int | None]]:
    """This project's keys for an official stage key, with the q/k/v chunk index of packed tensors."""
    if official_suffix.startswith("self_attn.in_proj_"):
        kind = official_suffix.rsplit("_", 1)[1]
        return [(f"decoder.stages.{stage}.{name}.{kind}", i) for i, name in enumerate(IN_PROJ)]
    for old, new in EXPECTED_PREFIXES.items():
        if official_suffix.startswith(old):
            return [(f"decoder.stages.{stage}.{new}{official_suffix[len(old) :]}", None)]
    return [(f"decoder.stages.{stage}.{official_suffix}", None)]


def small_config(arch: str):
    cfg = LazyConfig.load(str(CONFIG_DIR / f"{arch}.py"))
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = C, 4, F, D, K
    cfg.model.num_proposals = N
    return cfg


@pytest.fixture(scope="module", params=["sparse_rcnn", "recursivedet"])
def small(request):
    """(arch, small model with the real R50-FPN backbone, official-format state dict for it)."""
    arch = request.param
    torch.manual_seed(0)
    model = instantiate(small_config(arch).model)
    g = torch.Generator().manual_seed(1)
    official = {
        k: torch.randn(v.shape, generator=g) for k, v in model.state_dict().items() if k.startswith("backbone.")
    }
    official["init_proposal_features.weight"] = torch.randn(N, C, generator=g)
    official["init_proposal_boxes.weight"] = torch.rand(N, 4, generator=g)
    for prefix, _ in official_stage_prefixes(arch):
        for name, shape in STAGES[arch].items():
            official[prefix + name] = torch.randn([OFFICIAL_TO_SMALL.get(s, s) for s in shape], generator=g)
    return arch, model, official


def test_converted_checkpoint_loads_strictly_and_every_tensor_lands_where_it_must(small):
    arch, model, official = small
    assert detect_official_architecture(official) == arch
    model.load_state_dict(convert_official_state_dict(official), strict=True)
    ours = model.state_dict()
    checked = set()
    for prefix, stage in official_stage_prefixes(arch):
        for name in STAGES[arch]:
            value = official[prefix + name]
            for key, chunk in expected_targets(name, stage):
                expected = value if chunk is None else value.chunk(3)[chunk]
                assert torch.equal(ours[key], expected), f"{prefix + name} -> {key}"
                checked.add(key)
    for key in [k for k in official if not k.startswith("head.")]:
        assert torch.equal(ours[key], official[key]), key
        checked.add(key)
    # The default per-channel form of the dynamic-conv box PE has one tensor more per stage, W, which an official
    # checkpoint loads as zeros: the official function (recursivedet.modeling.dynamic_conv).
    added = {k for k in ours if k.endswith("dynamic_conv.position_channels")}
    assert all((ours[k] == 0).all() for k in added) and len(added) == (2 if arch == "recursivedet" else 0)
    assert checked == set(ours) - added, "every other tensor of the model comes from the checkpoint"


def test_sparse_rcnn_attention_packing_is_query_key_value():
    q, k, v = (torch.full((C, C), float(i)) for i in range(3))
    state = {"head.head_series.0.self_attn.in_proj_weight": torch.cat([q, k, v])}
    state["head.head_series.0.self_attn.in_proj_bias"] = torch.arange(3 * C, dtype=torch.float32)
    out = convert_official_state_dict(state)
    for i, name in enumerate(IN_PROJ):
        assert (out[f"decoder.stages.0.{name}.weight"] == i).all()
        assert torch.equal(out[f"decoder.stages.0.{name}.bias"], torch.arange(i * C, (i + 1) * C, dtype=torch.float32))


@pytest.mark.parametrize("arch", ["sparse_rcnn", "recursivedet"])
def test_full_width_official_shapes_match_this_projects_stage(arch):
    # Meta tensors: the real sizes (a 256-wide stage is 13M parameters) without allocating them.
    official = {k: torch.empty(v, device="meta") for k, v in OFFICIAL_TOP.items()}
    for prefix, _ in official_stage_prefixes(arch):
        official.update({prefix + k: torch.empty(v, device="meta") for k, v in STAGES[arch].items()})
    converted = convert_official_state_dict(official)
    stage_cfg = OmegaConf.to_container(LazyConfig.load(str(CONFIG_DIR / f"{arch}.py")).model.decoder, resolve=True)
    with torch.device("meta"):  # the official code's form of the dynamic-conv box PE
        stage = DecoderStage(**{**stage_cfg["stage"], "dynamic_conv_pe_form": "official"})
    expected = {k: tuple(v.shape) for k, v in stage.state_dict().items()}
    for index in sorted({i for _, i in official_stage_prefixes(arch)}):
        prefix = f"decoder.stages.{index}."
        got = {k[len(prefix) :]: tuple(v.shape) for k, v in converted.items() if k.startswith(prefix)}
        assert got == expected
    assert {k: tuple(converted[k].shape) for k in OFFICIAL_TOP} == OFFICIAL_TOP


def test_official_backbone_names_and_shapes_are_this_projects():
    backbone = instantiate(LazyConfig.load(str(CONFIG_DIR / "sparse_rcnn.py")).model.backbone)
    lines = sorted(f"backbone.{k} {'x'.join(map(str, v.shape))}" for k, v in backbone.state_dict().items())
    assert (len(lines), hashlib.sha256("\n".join(lines).encode()).hexdigest()) == OFFICIAL_BACKBONE


def test_other_checkpoints_are_refused_with_a_clear_message(small):
    _, model, official = small
    faster_rcnn = {
        "backbone.bottom_up.stem.conv1.weight": torch.zeros(64, 3, 7, 7),
        "proposal_generator.rpn_head.conv.weight": torch.zeros(256, 256, 3, 3),
        "roi_heads.box_head.fc1.weight": torch.zeros(1024, 12544),
        "roi_heads.box_predictor.cls_score.weight": torch.zeros(81, 1024),
    }
    with pytest.raises(CheckpointFormatError, match="not an official Sparse R-CNN or RecursiveDet checkpoint"):
        convert_official_state_dict(faster_rcnn)
    with pytest.raises(CheckpointFormatError, match="already in this project's format"):
        convert_official_state_dict(model.state_dict())
    unknown = dict(official)
    stage_prefix = official_stage_prefixes(detect_official_architecture(official))[0][0]
    unknown[stage_prefix + "extra_layer.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointFormatError, match="extra_layer.weight"):
        convert_official_state_dict(unknown)


def run_converter(*argv: str) -> int:
    """The converter's command line in this process, as ``python -m`` runs it: its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        run_command(lambda: convert_main(list(argv)))
    return exit_info.value.code


def test_cli_writes_a_checkpoint_the_model_loads(small, tmp_path, capsys):
    arch, model, official = small
    source, target = tmp_path / "official.pth", tmp_path / "converted.pth"
    torch.save({"model": official, "iteration": 1}, source)
    assert run_converter(str(source), str(target)) == 0
    assert f"SparseRCNN/models/{arch}.py" in capsys.readouterr().out
    saved = torch.load(target, weights_only=True)  # the converted file holds tensors and a string only
    assert saved["converted_from"] == arch
    fresh = instantiate(small_config(arch).model)
    fresh.load_state_dict(saved["model"], strict=True)
    assert torch.equal(fresh.init_proposal_boxes.weight, official["init_proposal_boxes.weight"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["converted.pth", "official.pth"]  # no temporary file

    bad = tmp_path / "faster_rcnn.pth"
    torch.save({"model": {"roi_heads.box_head.fc1.weight": torch.zeros(2, 2)}}, bad)
    assert run_converter(str(bad), str(tmp_path / "never.pth")) == 2
    assert capsys.readouterr().err.startswith("error: not an official")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert run_converter(str(tmp_path / "notes.txt"), str(tmp_path / "never.pth")) == 2
    err = capsys.readouterr().err
    # was "KeyError: 101" (and a suggestion to load with weights_only=False for other bytes)
    reason = "not a PyTorch checkpoint (the file is corrupt or of another kind; 16 bytes)"
    assert err == f"error: cannot read checkpoint {tmp_path / 'notes.txt'}: {reason}\n"
    assert not (tmp_path / "never.pth").exists()


def test_cli_output_folder_and_source_errors_are_one_line(small, tmp_path, capsys):
    _, _, official = small
    source = tmp_path / "official.pth"
    torch.save({"model": official}, source)
    target = tmp_path / "no_such_folder" / "converted.pth"
    assert run_converter(str(source), str(target)) == 2
    assert capsys.readouterr().err == (
        f"error: cannot write {target}: its folder {target.parent} does not exist (create it first)\n"
    )
    assert not target.parent.exists()
    assert run_converter(str(source), str(tmp_path)) == 2
    assert capsys.readouterr().err == (
        f"error: output {tmp_path} is a directory; give the path of the .pth file to write\n"
    )
    assert run_converter(str(tmp_path), str(tmp_path / "out.pth")) == 2
    assert capsys.readouterr().err.startswith(f"error: checkpoint {tmp_path} is a directory, not a checkpoint file")
    assert run_converter(str(tmp_path / "missing.pth"), str(tmp_path / "out.pth")) == 2
    assert capsys.readouterr().err == f"error: checkpoint file {tmp_path / 'missing.pth'} does not exist\n"
    assert not (tmp_path / "out.pth").exists()
