"""The AdaMixer host: parameter counts against the official code and paper Tables 1-2, the modules against
AdaMixer's equations, the RecursiveDet switches that apply (stage sharing, RecDy, box PEs) and the clear errors
for those that do not, training and inference of the tiny model."""

import math

import pytest
import torch
from detectron2.config import instantiate
from model_factory import make_input, one_thread, tiny_adamixer, tiny_adamixer_config
from torch.nn import functional as F

from recursivedet.errors import ConfigValueError
from recursivedet.model_zoo import get_config
from recursivedet.modeling.schedule import StageSchedule
from recursivedet.projects.AdaMixer.modeling import AdaMixerStage
from recursivedet.projects.AdaMixer.modeling.boxes import refine_xyzr, xyxy_to_xyzr, xyzr_to_xyxy
from recursivedet.projects.AdaMixer.modeling.mixing import AdaptiveMixing
from recursivedet.projects.AdaMixer.modeling.mixing_position import MixingPositionEncoding
from recursivedet.projects.AdaMixer.modeling.position_encoding import point_sine_embedding, xyzr_sine_embedding
from recursivedet.projects.AdaMixer.modeling.sampling import AdaptiveSampling
from recursivedet.projects.AdaMixer.modeling.self_attention import iof_log_bias

# Measured with the official code (R50, 300 queries, 80 classes): exact targets.
OFFICIAL_STAGE = {"MSA": 263_168, "Dyn": 8_421_376, "Out": 8_388_864, "Head": 154_196, "tau": 8}
OFFICIAL_STAGE_TOTAL = 18_378_716
OFFICIAL_R50 = 134_842_904


def _stage_groups(stage) -> dict[str, int]:
    groups = {"MSA": "self_attn.attn.", "Dyn": "adaptive_mixing.dynamic_layer.", "Out": "adaptive_mixing.out_layer."}
    counts = {k: sum(p.numel() for n, p in stage.named_parameters() if n.startswith(v)) for k, v in groups.items()}
    heads = ("cls_layers.", "reg_layers.", "class_logits.", "box_delta.")
    counts["Head"] = sum(p.numel() for n, p in stage.named_parameters() if n.startswith(heads))
    counts["tau"] = stage.self_attn.iof_tau.numel()
    return counts


def test_full_size_stage_has_the_official_parameters():
    stage = AdaMixerStage()
    assert _stage_groups(stage) == OFFICIAL_STAGE
    assert sum(p.numel() for p in stage.parameters()) == OFFICIAL_STAGE_TOTAL
    # the bb-PEs add under 0.5M (paper Table 2: 43M = 135M - 5 stages + PE)
    pe = AdaMixerStage(box_pe_self_attention=True, box_pe_dynamic_conv=True)
    assert sum(p.numel() for p in pe.parameters()) - OFFICIAL_STAGE_TOTAL == 461_058


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, expected",
    [
        ("AdaMixer/adamixer_R50_300pro_3x.py", OFFICIAL_R50),
        ("AdaMixer/recursivedet_adamixer_R50_300pro_3x.py", OFFICIAL_R50 - 5 * OFFICIAL_STAGE_TOTAL + 461_058),
        ("AdaMixer/adamixer_R101_300pro_3x.py", 153_835_032),
        ("AdaMixer/recursivedet_adamixer_R101_300pro_3x.py", 62_402_510),
    ],
)
def test_table2_parameter_counts(name, expected):
    model = instantiate(get_config(name).model)
    assert sum(p.numel() for p in model.parameters()) == expected
    # paper Table 2 in millions: 135 / 43 / 154 / 62
    paper = {"adamixer_R50": 135, "recursivedet_adamixer_R50": 43, "adamixer_R101": 154}
    paper["recursivedet_adamixer_R101"] = 62
    key = name.split("/")[1].rsplit("_300pro", 1)[0]
    assert round(expected / 1e6) == paper[key]


def test_boxes_round_trip_and_update():
    xyxy = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 640.0, 480.0]])
    xyzr = xyxy_to_xyzr(xyxy)
    assert torch.allclose(xyzr[0], torch.tensor([30.0, 60.0, math.log2(math.sqrt(40 * 80)), 1.0]))
    assert torch.allclose(xyzr_to_xyxy(xyzr), xyxy, atol=1e-4)
    delta = torch.tensor([[0.5, -0.25, 1.0, 0.0]]).expand(2, 4)
    refined = refine_xyzr(xyzr, delta)
    scale = 2.0 ** xyzr[:, 2]
    assert torch.allclose(refined[:, 0], xyzr[:, 0] + 0.5 * scale) and torch.allclose(refined[:, 2], xyzr[:, 2] + 1)


def test_iof_bias_and_xyzr_sinusoid():
    xyzr = xyxy_to_xyzr(torch.tensor([[[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 25.0, 10.0], [50.0, 50.0, 60.0, 60.0]]]))
    iof = iof_log_bias(xyzr).exp()
    # |b0 n b1| = 50: IoF(0, 1) = 50 / 100, IoF(1, 0) = 50 / 200; disjoint boxes ~ 1e-7
    assert torch.allclose(iof[0, 0, 1], torch.tensor(0.5), atol=1e-5)
    assert torch.allclose(iof[0, 1, 0], torch.tensor(0.25), atol=1e-5)
    assert iof[0, 0, 2] < 1e-6 and torch.allclose(iof[0].diagonal(), torch.ones(3), atol=1e-5)
    # AdaMixer's sinusoid: x / 1000 first, sin and cos interleaved, 10000^(2 (i // 2) / F)
    sine = xyzr_sine_embedding(xyzr, 8)
    x = xyzr[0, 0, 0] / 1000
    assert torch.allclose(sine[0, 0, :4], torch.stack([x.sin(), x.cos(), (x / 10).sin(), (x / 10).cos()]))
    r = xyzr[0, 1, 3]
    assert torch.allclose(sine[0, 1, 24:26], torch.stack([r.sin(), r.cos()]))


def test_sampling_reads_pixel_centres_and_weights_levels():
    """A point at a pixel centre of the level its z names reads that pixel (bilinear, align_corners False);
    the level weights are softmax(-(z - log2 stride)^2 / 2)."""
    sampling = AdaptiveSampling(dim=4, num_groups=2, num_points=1)
    maps = [torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 2, 4, 4) * s for s in (1.0, 10.0)]
    strides = [4, 8]
    # pixel (row 1, col 2) of level 0 has its centre at (2.5 * 4, 1.5 * 4) pixels = (10, 6)
    points = torch.tensor([10.0, 6.0, 2.0]).view(1, 1, 1, 1, 3).expand(1, 1, 2, 1, 3)
    out = sampling.sample(maps, strides, points)  # (1, 1, G, P, c / G)
    w = torch.softmax(torch.tensor([-0.0 / 2, -1.0 / 2]), 0)
    level1 = F.grid_sample(maps[1], (torch.tensor([10.0, 6.0]) / 32 * 2 - 1).view(1, 1, 1, 2), align_corners=False)
    for g in range(2):
        expected = w[0] * maps[0][0, g, 1, 2] + w[1] * level1[0, g, 0, 0]
        assert torch.allclose(out[0, 0, g, 0, 0], expected)


def test_mixing_position_term_equals_the_projected_dot_product():
    torch.manual_seed(0)
    pe = MixingPositionEncoding(16)
    query, boxes = torch.randn(2, 3, 16), torch.rand(2, 3, 4) * 0.5 + 0.25
    points = torch.rand(2, 3, 4, 5, 3) * 100
    wh = torch.tensor([[100.0, 80.0], [120.0, 90.0]])
    term = pe(query, boxes, points, wh)
    p_k = pe.kernel_pos_proj(pe.position_kernel(query, boxes))
    p_f = pe.roi_pos_proj(point_sine_embedding(points[..., :2] / wh[:, None, None, None], 8))
    assert torch.allclose(term, (p_f * p_k[:, :, None, None]).sum(-1), atol=1e-4)


def test_schedule_of_stage_sharing_and_passes():
    assert StageSchedule(6, "all", 2).num_modules == 1
    recst_dagger = StageSchedule(6, "all_but_first", 2, 1)
    assert [recst_dagger.module_index(t) for t in range(6)] == [0, 1, 1, 1, 1, 1]
    assert [recst_dagger.passes(t) for t in range(3)] == [1, 2, 2]


def _batch(n=2):
    return [make_input(64, 96, [[5, 5, 40, 50], [30, 10, 90, 60]], [0, 2], seed=i) for i in range(n)]


@pytest.mark.parametrize("name", ["adamixer", "recursivedet_adamixer"])
def test_tiny_models_train_and_infer(name):
    with one_thread():
        model = tiny_adamixer(name)
        expected_modules = 1 if name == "recursivedet_adamixer" else 6
        assert len(model.decoder.stages) == expected_modules
        losses = model(_batch())
        assert {"loss_cls", "loss_bbox", "loss_giou", "loss_cls_0", "loss_giou_4"} <= set(losses)
        assert len(losses) == 18 and all(torch.isfinite(v) for v in losses.values())
        sum(losses.values()).backward()
        # the initial boxes are a parameter no gradient reaches (official code)
        assert model.init_proposal_boxes.weight.grad is None
        assert model.init_proposal_features.weight.grad is not None
        model.eval()
        with torch.no_grad():
            out = model(_batch(1))
        inst = out[0]["instances"]
        assert len(inst) == 8 and inst.pred_boxes.tensor.shape == (8, 4)


def test_recdy_reuses_the_stage_on_the_same_samples():
    """A second mixing pass changes the output but adds no parameter; stage sharing keeps one module."""
    with one_thread():
        one = tiny_adamixer(**{"decoder.stage_sharing": "all"})
        two = tiny_adamixer(**{"decoder.stage_sharing": "all", "decoder.dynamic_passes": 2})
        two.load_state_dict(one.state_dict())
        for m in (one, two):
            torch.nn.init.normal_(m.decoder.stages[0].adaptive_mixing.dynamic_layer.weight, std=0.05)
        two.load_state_dict(one.state_dict())
        one.eval(), two.eval()
        images = one.preprocess_image(_batch(1))
        with torch.no_grad():
            a = one.run_decoder(images)
            b = two.run_decoder(images)
        assert sum(p.numel() for p in one.parameters()) == sum(p.numel() for p in two.parameters())
        assert not torch.allclose(a[-1][0], b[-1][0])


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"decoder.stage.centerness": "static"}, "cb-PE.*does not apply to the AdaMixer host"),
        ({"num_proposals": 0}, "model.num_proposals must be a positive integer"),
        ({"decoder.stage_sharing": "some"}, "stage_sharing must be one of"),
        ({"decoder.dynamic_passes": 0}, "passes must be at least 1"),
        ({"in_features": ["p2", "p9"]}, "not backbone outputs"),
        ({"decoder.stage.mixing_chunk_queries": 0}, "mixing_chunk_queries must be None or at least 1"),
    ],
)
def test_settings_that_do_not_apply_are_config_errors(overrides, match):
    cfg = tiny_adamixer_config(**overrides)
    with pytest.raises(ConfigValueError, match=match):
        instantiate(cfg.model)


def test_cost_table_splits_the_stage_into_table1_categories():
    from recursivedet.analysis.model_cost import stage_breakdown

    counts = stage_breakdown(AdaMixerStage(box_pe_self_attention=True, box_pe_dynamic_conv=True))
    assert counts["MSA"] == 263_168 and counts["Dyn"] == 8_421_376 and counts["Out"] == 8_388_864
    assert counts["Head"] == 154_196 and counts["PE"] == 461_058 and counts["Others"] == 1_151_104 + 8


def test_mixing_in_chunks_equals_the_equations_at_once():
    """Mixing the queries in chunks (of even size, the last one shorter when they do not divide) gives the
    numbers and gradients of mixing them all at once, and one query's output is AdaMixer's equations written
    out per group (float64)."""
    torch.manual_seed(0)
    b, n, g, p_in, p_out, dim = 2, 7, 4, 6, 5, 16
    sampled = torch.randn(b, n, g, p_in, dim // g, dtype=torch.float64, requires_grad=True)
    query = torch.randn(b, n, dim, dtype=torch.float64, requires_grad=True)
    position = torch.randn(b, n, g, p_in, dtype=torch.float64, requires_grad=True)
    mixing = AdaptiveMixing(dim, g, p_in, p_out, chunk_queries=None).double()
    torch.nn.init.normal_(mixing.dynamic_layer.weight, std=0.3)
    results = []
    for chunk in (None, 4, 3, 1, 100):
        mixing.chunk_queries = chunk
        out = mixing(sampled, query, position)
        results.append((out, torch.autograd.grad(out.square().sum(), [sampled, query, position, *mixing.parameters()])))
    for out, grads in results[1:]:
        assert torch.allclose(out, results[0][0], atol=1e-12)
        for x, y in zip(grads, results[0][1], strict=True):
            assert torch.allclose(x, y, atol=1e-12)
    cg = dim // g
    params = mixing.dynamic_layer(query[1, 3]).view(g, -1).detach()
    mixed = []
    for k in range(g):
        channel, spatial = params[k, : cg * cg].view(cg, cg), params[k, cg * cg :].view(p_out, p_in)
        x = sampled[1, 3, k].detach() @ channel + position[1, 3, k, :, None].detach()
        x = F.relu(F.layer_norm(x, x.shape))
        mixed.append(F.relu(F.layer_norm(spatial @ x, (p_out, cg))).flatten())
    expected = mixing.out_layer(torch.cat(mixed))
    assert torch.allclose(results[1][0][1, 3], expected, atol=1e-12)
    with pytest.raises(ValueError, match="chunk_queries"):
        AdaptiveMixing(dim, g, p_in, p_out, chunk_queries=0)


def test_inference_mixing_group_by_group_equals_the_mixing_with_gradients():
    """Without gradients the mixing runs one group at a time (dynamic-layer rows and out-layer columns per group,
    Out summed over the groups): the same numbers as the path that keeps gradients (float64), for every chunk
    size, with and without the bb-PE position term."""
    torch.manual_seed(0)
    b, n, g, p_in, p_out, dim = 2, 7, 4, 6, 5, 16
    sampled = torch.randn(b, n, g, p_in, dim // g, dtype=torch.float64)
    query = torch.randn(b, n, dim, dtype=torch.float64)
    position = torch.randn(b, n, g, p_in, dtype=torch.float64)
    mixing = AdaptiveMixing(dim, g, p_in, p_out, chunk_queries=None).double()
    torch.nn.init.normal_(mixing.dynamic_layer.weight, std=0.3)
    torch.nn.init.normal_(mixing.out_layer.bias)
    for pos in (position, None):
        with_grad = mixing(sampled, query.requires_grad_(True), pos)
        assert with_grad.grad_fn is not None
        query.requires_grad_(False)
        for chunk in (None, 1, 2, 100):
            mixing.chunk_queries = chunk
            with torch.no_grad():
                assert torch.allclose(mixing(sampled, query, pos), with_grad, atol=1e-12)
            mixing.requires_grad_(False)  # no tensor needs a gradient: the inference path, grad mode or not
            assert torch.allclose(mixing(sampled, query, pos), with_grad, atol=1e-12)
            mixing.requires_grad_(True)
        mixing.chunk_queries = None


def test_gathered_sampling_equals_grid_sample_values_and_gradients():
    """The row-gather sampling gives the official per-level grid_sample's numbers (float64), points outside the
    maps included, with the same gradients for the points and the maps."""
    torch.manual_seed(0)
    maps = [torch.randn(2, 16, h, w, dtype=torch.float64) for h, w in [(20, 24), (10, 12), (5, 6), (3, 3)]]
    maps = [m.requires_grad_(True) for m in maps]
    points = torch.rand(2, 5, 4, 6, 3, dtype=torch.float64) * torch.tensor([110.0, 90.0, 4.0], dtype=torch.float64)
    points = (points + torch.tensor([-8.0, -8.0, 1.5], dtype=torch.float64)).requires_grad_(True)
    grad = torch.randn(2, 5, 4, 6, 4, dtype=torch.float64)
    results = []
    for gather in (True, False):
        sampling = AdaptiveSampling(16, num_groups=4, num_points=6, gather=gather)
        layout = torch.channels_last if gather else torch.contiguous_format
        out = sampling.sample([m.contiguous(memory_format=layout) for m in maps], [4, 8, 16, 32], points)
        results.append((out, torch.autograd.grad(out, [points, *maps], grad)))
    (a, grads_a), (b, grads_b) = results
    assert torch.allclose(a, b, atol=1e-12)
    for x, y in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(x, y, atol=1e-12)
