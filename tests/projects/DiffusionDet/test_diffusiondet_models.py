"""DiffusionDet and RecursiveDet (DiffusionDet): parameter counts against the official code and paper Table 2,
and every RecursiveDet switch acting on this host through the library's decoder (module counts, passes, PE
modules, the time modulation in shared stages, zero-width boxes)."""

import pytest
import torch
from detectron2.config import instantiate
from model_factory import make_input, tiny_diffusiondet, tiny_diffusiondet_config

from recursivedet.analysis.model_cost import stage_breakdown
from recursivedet.errors import ConfigValueError
from recursivedet.model_zoo import get_config
from recursivedet.modeling import DecoderStage, RecursiveDecoder

# Measured with the official DiffusionDet code (R50-FPN, 500 proposals).
OFFICIAL_TOTAL, OFFICIAL_STAGE, OFFICIAL_TIME_MLP = 110_673_336, 13_760_212, 1_312_768
TABLE2 = {  # paper Table 2, millions
    "DiffusionDet/diffusiondet_R50_500pro_60ep.py": 111,
    "DiffusionDet/diffusiondet_R101_500pro_60ep.py": 130,
    "DiffusionDet/recursivedet_diffusiondet_R50_500pro_60ep.py": 57,
    "DiffusionDet/recursivedet_diffusiondet_R101_500pro_60ep.py": 76,
}


@pytest.fixture(scope="module")
def r50_models():
    """The full-size R50 models of DiffusionDet and RecursiveDet (DiffusionDet)."""
    return {name: instantiate(get_config(name).model) for name in list(TABLE2)[::2]}


@pytest.mark.slow
def test_diffusiondet_r50_equals_the_official_parameter_count(r50_models):
    model = r50_models["DiffusionDet/diffusiondet_R50_500pro_60ep.py"]
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_TOTAL
    assert [sum(p.numel() for p in s.parameters()) for s in model.decoder.stages] == [OFFICIAL_STAGE] * 6
    assert sum(p.numel() for p in model.time_mlp.parameters()) == OFFICIAL_TIME_MLP
    # Sparse R-CNN's stage + the per-stage time MLP (SiLU, Linear 1024 -> 512), counted with "Others"
    breakdown = stage_breakdown(model.decoder.stages[0])
    assert breakdown["Others"] == 1_053_568 + 1024 * 512 + 512 and breakdown["PE"] == 0
    assert model.num_proposals == 500


@pytest.mark.slow
def test_recursivedet_diffusiondet_r50_is_recst_dagger_with_pes(r50_models):
    model = r50_models["DiffusionDet/recursivedet_diffusiondet_R50_500pro_60ep.py"]
    stages = model.decoder.stages
    assert len(stages) == 2 and model.decoder.num_stages == 6
    # each of the two stage modules: DiffusionDet's stage + the library's box PEs (official RecursiveDet: 658,178,
    # and the per-channel form's W, d x c)
    pe = 658_178 + 64 * 256
    assert [stage_breakdown(s)["PE"] for s in stages] == [pe] * 2
    assert [s.condition_dim for s in stages] == [1024, 1024]
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_TOTAL - 4 * OFFICIAL_STAGE + 2 * pe


@pytest.mark.slow
@pytest.mark.parametrize("name,paper", TABLE2.items())
def test_table2_rows_within_one_percent_of_the_paper(name, paper):
    from recursivedet.analysis.model_cost import model_cost

    params = model_cost(name, with_flops=False)["params"] / 1e6
    assert abs(params - paper) / paper < 0.01, (name, params, paper)


def test_configs_have_the_recipe_and_switches():
    for name in TABLE2:
        cfg = get_config(name)
        d = cfg.model.decoder
        recursive = "recursivedet_" in name
        assert cfg.model.num_proposals == 500 and d.num_stages == 6
        assert cfg.train.max_iter == 450000 and list(cfg.lr_multiplier.steps) == [350000, 420000]
        assert cfg.dataloader.train.mapper.augmentations.random_crop
        expected = (
            ("all_but_first", 2, 1, True, True, "static") if recursive else ("none", 1, None, False, False, "none")
        )
        got = (d.stage_sharing, d.dynamic_passes, d.first_stage_dynamic_passes, d.stage.box_pe_self_attention)
        assert got + (d.stage.box_pe_dynamic_conv, d.stage.centerness) == expected, name
        assert cfg.model.backbone.bottom_up.stages.depth == (101 if "R101" in name else 50)


@pytest.mark.parametrize("sharing,modules", [("none", 6), ("all", 1), ("all_but_first", 2)])
@pytest.mark.parametrize("passes", [1, 2])
def test_stage_sharing_and_passes_are_the_library_scheduling(sharing, modules, passes):
    model = tiny_diffusiondet(**{"decoder.stage_sharing": sharing, "decoder.dynamic_passes": passes})
    assert isinstance(model.decoder, RecursiveDecoder) and type(model.decoder.stages[0]) is DecoderStage
    assert len(model.decoder.stages) == modules
    calls = {id(s): 0 for s in model.decoder.stages}
    convs = []
    hooks = [
        s.register_forward_hook(lambda m, *_: calls.__setitem__(id(m), calls[id(m)] + 1)) for s in model.decoder.stages
    ]
    hooks += [s.dynamic_conv.register_forward_hook(lambda *_: convs.append(1)) for s in model.decoder.stages]
    model.eval()
    with torch.no_grad():
        model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
    for h in hooks:
        h.remove()
    assert sum(calls.values()) == 6
    if sharing == "all_but_first":
        assert list(calls.values()) == [1, 5]
    assert len(convs) == 6 * passes


@pytest.mark.parametrize("centerness", ["none", "static", "learnable", "adjust"])
def test_box_pes_and_centerness_on_noisy_boxes_with_zero_width(centerness):
    model = tiny_diffusiondet("recursivedet_diffusiondet", **{"decoder.stage.centerness": centerness}, num_proposals=6)
    stage = model.decoder.stages[0]
    assert stage.box_pe_self_attention and stage.dynamic_conv.box_pe and stage.box_pe_min_size == 1e-3
    assert (stage.dynamic_conv.centerness is None) == (centerness == "none")
    images = model.preprocess_image([make_input(64, 64)])
    features, whwh, extents = model.pooled_features(images, model.run_backbone(images))
    # boxes as the corruption clamps them: w = 0, h = 0 and both
    boxes = torch.tensor([[[0.5, 0.5, 0.0, 0.3], [0.2, 0.3, 0.4, 0.0], [0.0, 1.0, 0.0, 0.0]] * 2])
    outputs = model.head(features, boxes, torch.tensor([999]), whwh, extents)
    assert all(torch.isfinite(x).all() for pair in outputs for x in pair)
    loss = sum(x.sum() for pair in outputs for x in pair)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_time_modulation_is_per_stage_module_and_only_on_the_branches():
    """A shared stage applies its own time MLP each time it runs; the object features passed on (and the
    self-attention, dynamic conv, FFN) do not see the time, only the class and box branches' input."""
    model = tiny_diffusiondet("recursivedet_diffusiondet").eval()
    images = model.preprocess_image([make_input(64, 64)])
    features, whwh, extents = model.pooled_features(images, model.run_backbone(images))
    boxes = torch.rand(1, 8, 4) * 0.5 + 0.25
    with torch.no_grad():
        cond = [model.time_mlp(torch.tensor([t])) for t in (10, 900)]
        runs = [model.decoder(features, boxes, None, whwh, extents, return_features=True, condition=c) for c in cond]
        first = [
            model.decoder(features, boxes, None, whwh, extents, num_stages=1, return_features=True, condition=c)
            for c in cond
        ]
    # stage 1's object features do not depend on t, its predictions do
    assert torch.equal(first[0][1], first[1][1])
    assert not torch.allclose(first[0][0][0][0], first[1][0][0][0])
    # later stages see t through the boxes they were given, so everything after stage 1 differs
    assert not torch.allclose(runs[0][0][-1][1], runs[1][0][-1][1])
    assert [n for n, _ in model.decoder.stages[1].named_children()].count("condition_mlp") == 1


def test_stage_without_conditioning_is_unchanged_and_refuses_one():
    stage = DecoderStage(dim=32, num_heads=4, ffn_dim=64, dynamic_dim=8, num_classes=3)
    assert not hasattr(stage, "condition_mlp")
    x = torch.randn(1, 4, 32)
    assert stage.modulate(x, None) is x
    with pytest.raises(ValueError, match="no conditioning"):
        stage.modulate(x, torch.zeros(1, 8))
    with pytest.raises(ConfigValueError):
        DecoderStage(dim=32, num_heads=4, condition_dim=-1)


def test_condition_width_must_match_the_time_embedding():
    cfg = tiny_diffusiondet_config()
    cfg.model.decoder.stage.condition_dim = 64
    with pytest.raises(ConfigValueError, match="condition_dim"):
        instantiate(cfg.model)
