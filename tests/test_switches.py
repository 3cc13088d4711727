"""Every paper switch is documented in the README and in --help, and each one does what it says to the model
it builds: module counts, dynamic-conv passes, PE modules, loss terms, REGO stages and ratios."""

import ast
from pathlib import Path

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import TinyBackbone, make_input

from recursivedet.modeling.box_utils import cxcywh_to_xyxy
from recursivedet.switches import PAPER_SWITCHES, switches_help

ROOT = Path(__file__).resolve().parents[1]
# The base of the switch tests: RecursiveDet as the official code (RecSt-dagger, RecDy with one pass in the
# first stage, both box PEs, static centerness, 6 stages), at a CPU-test size.
BASE_STAGES = 6


def test_readme_and_help_list_every_switch():
    readme = (ROOT / "docs" / "model.md").read_text()  # the switch table the README links to
    help_text = switches_help()
    for factor, _term, override in PAPER_SWITCHES:
        key = override.split("=")[0]
        assert f"`{key}=" in readme, f"docs/model.md misses {key}"
        assert key in help_text and factor in help_text


def build(overrides: list[str]):
    cfg = LazyConfig.load(str(ROOT / "projects/SparseRCNN/configs/recursivedet_R50_100pro_3x.py"))
    cfg.model.backbone = TinyBackbone(32)
    stage = cfg.model.decoder.stage
    stage.dim, stage.num_heads, stage.ffn_dim, stage.dynamic_dim, stage.num_classes = 32, 4, 64, 8, 3
    cfg.model.num_proposals = 10
    cfg = LazyConfig.apply_overrides(cfg, overrides)
    torch.manual_seed(0)
    return instantiate(cfg.model)


IMAGE = {"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}


def count_calls(model, modules, train: bool = False) -> int:
    """How often ``modules`` run in one forward pass (eval on one image, or a training step's forward)."""
    calls = []
    handles = [m.register_forward_hook(lambda *_: calls.append(1)) for m in modules]
    try:
        with torch.no_grad():
            if train:
                model.train()([make_input(64, 64, [[8, 8, 40, 40]], [1])])
            else:
                model.eval()([IMAGE])
    finally:
        for h in handles:
            h.remove()
    return len(calls)


def loss_keys(model) -> set[str]:
    with torch.no_grad():
        return set(model.train()([make_input(64, 64, [[8, 8, 40, 40]], [1])]))


def check_stage_sharing(model, value):
    modules = {"none": BASE_STAGES, "all": 1, "all_but_first": 2}[value]
    assert len(model.decoder.stages) == modules
    used = [id(model.decoder.stage_module(t)) for t in range(BASE_STAGES)]
    assert len(set(used)) == modules and len(used) == BASE_STAGES


def check_passes(model, first: int, others: int):
    dynamic_convs = {id(s.dynamic_conv): s.dynamic_conv for s in model.decoder.stages}.values()
    assert count_calls(model, dynamic_convs) == first + (BASE_STAGES - 1) * others


def check_centerness(model, value):
    for stage in model.decoder.stages:
        mask = stage.dynamic_conv.centerness
        assert (mask is None) if value == "none" else (mask.mode == value)
    if value == "learnable":
        assert any(n.endswith("centerness.mask") for n, _ in model.named_parameters())
    if value == "adjust":
        assert any("centerness.center_offset" in n for n, _ in model.named_parameters())


def check_deep_supervision(model, value):
    keys = loss_keys(model)
    earlier = {k for k in keys if k.startswith("loss_giou_") and "rego" not in k}
    assert "loss_giou" in keys and earlier == ({f"loss_giou_{t}" for t in range(BASE_STAGES - 1)} if value else set())


def check_l1_box_format(model, value):
    assert model.criterion.l1_box_format == value == model.criterion.matcher.l1_box_format


def check_proposal_box_init(model, value):
    boxes = model.init_proposal_boxes.weight
    if value == "grid":
        assert len({tuple(b) for b in boxes[:, :2].tolist()}) == len(boxes)  # distinct centres
        xyxy = cxcywh_to_xyxy(boxes)
        assert (xyxy >= 0).all() and (xyxy <= 1).all()


def check_rego_stages(model, value):
    assert model.rego.num_stages == len(model.rego.stages) == value
    assert {f"loss_giou_rego{k}" for k in range(value)} <= loss_keys(model)


def check_inference_stages(model, value):
    images = model.preprocess_image([IMAGE])
    assert len(model.eval().run_decoder(images)) == value
    assert len(model.train().run_decoder(images)) == model.decoder.num_stages  # training runs the trained stages


def check_rego_at_inference(model, value):
    assert count_calls(model, [model.rego]) == (1 if value else 0)
    assert count_calls(model, [model.rego], train=True) == 1  # always trained


# override key -> check(model, value); each asserts the switch's effect on the model built with it.
EFFECTS = {
    "model.decoder.stage_sharing": check_stage_sharing,
    "model.decoder.dynamic_passes": lambda m, v: check_passes(m, first=1, others=v),
    "model.decoder.first_stage_dynamic_passes": lambda m, v: check_passes(m, first=v, others=2),
    "model.decoder.stage.box_pe_self_attention": lambda m, v: all(
        hasattr(s.self_attn, "q_pos_proj") == v and hasattr(s, "box_pos_mlp") == v for s in m.decoder.stages
    ),
    "model.decoder.stage.box_pe_dynamic_conv": lambda m, v: all(
        hasattr(s.dynamic_conv, "kernel_pos_proj") == v for s in m.decoder.stages
    ),
    "model.decoder.stage.centerness": check_centerness,
    "model.decoder.stage.dynamic_conv_pe_form": lambda m, v: all(
        hasattr(s.dynamic_conv, "position_channels") == (v == "per_channel") for s in m.decoder.stages
    ),
    "model.decoder.num_stages": lambda m, v: len(m.run_detector(m.preprocess_image([IMAGE]))[0]) == v,
    "model.decoder.inference_stages": check_inference_stages,
    "model.num_proposals": lambda m, v: m.init_proposal_boxes.weight.shape[0] == v,
    "model.deep_supervision": check_deep_supervision,
    "model.decoder.stage.box_refinement": lambda m, v: all(s.box_refinement == v for s in m.decoder.stages),
    "model.criterion.l1_box_format": check_l1_box_format,
    "model.decoder.box_delta_init": lambda m, v: all(
        (s.box_delta.weight == 0).all() == (v == "zero") for s in m.decoder.stages
    ),
    "model.proposal_box_init": check_proposal_box_init,
    "model.rego.num_stages": check_rego_stages,
    "model.rego.glimpse_scale": lambda m, v: m.rego.alphas == [3 * v, 2 * v, v],
    "model.rego.alphas": lambda m, v: m.rego.alphas == [float(a) for a in v],
    "model.rego.aux_losses": lambda m, v: ({"loss_giou_rego0_0"} <= loss_keys(m)) == v,
    "model.rego.at_inference": check_rego_at_inference,
}


def test_every_switch_has_an_effect_check():
    assert {o.split("=")[0] for _, _, o in PAPER_SWITCHES} == set(EFFECTS)


@pytest.mark.parametrize("override", [o for _, _, o in PAPER_SWITCHES], ids=lambda o: o.split("=")[0])
def test_each_switch_changes_the_model_as_documented(override):
    key, values = override.split("=")
    for text in values.split("|"):
        # REGO's other switches act on a model with REGO stages.
        extra = ["model.rego.num_stages=3"] if key.startswith("model.rego.") and key != "model.rego.num_stages" else []
        model = build([*extra, f"{key}={text}"])
        try:  # numbers, booleans, lists; names stay strings
            value = ast.literal_eval(text)
        except ValueError:
            value = text
        result = EFFECTS[key](model, value)
        assert result is None or result, f"{key}={text} had no effect"
        with torch.no_grad():
            assert len(model.eval()([IMAGE])) == 1
