"""REGO (CVPR 2022) after the RecursiveDet decoder: glimpse boxes, gradients, losses, inference switch,
configs of REGO Tables 2-3, parameter growth and a short overfit, on tiny models."""

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import CONFIG_DIR, make_input, one_thread, tiny_config, tiny_model

from recursivedet.modeling.box_utils import cxcywh_to_xyxy, image_whwh
from recursivedet.modeling.rego import enlarge_boxes, glimpse_ratios

IMAGES = [
    make_input(64, 96, [[8, 10, 40, 50], [40, 16, 90, 60]], [0, 2], seed=1),
    make_input(64, 64, [[5, 5, 40, 50]], [1], seed=2),
]
LOSSES = ("loss_cls", "loss_bbox", "loss_giou")
# REGO Table 2 (stages), Table 3 (glimpse scale, 3 stages) and Sec. 5.3 (alpha = 1, 1, 1): ratios per stage.
REGO_ROWS = {
    "table2_1_stage.py": [1.0],
    "table2_2_stages.py": [2.0, 1.0],
    "table2_3_stages.py": [3.0, 2.0, 1.0],
    "table2_4_stages.py": [4.0, 3.0, 2.0, 1.0],
    "table3_glimpse_scale_1x.py": [3.0, 2.0, 1.0],
    "table3_glimpse_scale_1_5x.py": [4.5, 3.0, 1.5],
    "table3_glimpse_scale_2x.py": [6.0, 4.0, 2.0],
    "sec5_3_alpha_1_1_1.py": [1.0, 1.0, 1.0],
}


@pytest.fixture(autouse=True)
def single_thread():
    """Every test of this module on one thread (tiny models, see ``model_factory.one_thread``)."""
    with one_thread():
        yield


def small_rego_model(**overrides):
    """Tiny RecursiveDet + REGO with 2 decoder stages (REGO's input is the last one either way)."""
    return tiny_model("recursivedet_rego", **{"decoder.num_stages": 2, **overrides})


def rego_inputs(model, images=IMAGES):
    """What the meta-architecture hands REGO: FPN maps, the decoder's last boxes and object features, sizes."""
    batch = model.preprocess_image(images)
    feature_maps = model.backbone(batch.tensor)
    features = [feature_maps[f] for f in model.in_features]
    whwh = image_whwh(batch.image_sizes, model.device)
    b = len(images)
    outputs, states = model.decoder(
        features,
        model.init_proposal_boxes.weight[None].expand(b, -1, -1),
        model.init_proposal_features.weight[None].expand(b, -1, -1),
        whwh,
        model.position_extents(batch.image_sizes),
        return_features=True,
    )
    return features, outputs[-1][1], states, whwh


def test_enlarged_boxes_keep_the_centre_and_scale_the_size_capped_at_the_image():
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.3], [0.1, 0.8, 0.45, 0.05], [0.7, 0.3, 0.9, 0.6]])
    for alpha in (1.0, 1.5, 2.0, 3.0):
        enlarged = enlarge_boxes(boxes, alpha)
        torch.testing.assert_close(enlarged[:, :2], boxes[:, :2])
        torch.testing.assert_close(enlarged[:, 2:], (alpha * boxes[:, 2:]).clamp(max=1.0))
    assert enlarge_boxes(boxes, 3.0)[2, 2:].tolist() == [1.0, 1.0]  # capped at the image's size
    assert enlarge_boxes(boxes[None], 2.0).shape == (1, 3, 4)


def test_ratios_follow_stages_scale_and_explicit_alphas():
    assert glimpse_ratios(3) == [3.0, 2.0, 1.0]  # Sec. 4.3: the last stage at 1, one more per earlier stage
    assert glimpse_ratios(4, 1.5) == [6.0, 4.5, 3.0, 1.5]
    assert glimpse_ratios(3, 2.0, [1, 1, 1]) == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="one ratio per stage"):
        glimpse_ratios(4, 1.0, [1, 1, 1])
    assert glimpse_ratios(0) == []  # REGO off
    with pytest.raises(ValueError, match="must be >= 0"):
        glimpse_ratios(-1)


def test_stages_pool_glimpses_of_the_previous_boxes_enlarged_by_their_alpha():
    model = small_rego_model(**{"rego.num_stages": 2, "rego.glimpse_scale": 1.5}).eval()
    assert model.rego.num_stages == len(model.rego.stages) == 2 and model.rego.alphas == [3.0, 1.5]
    pooled = []

    def pool(features, pixel_boxes):
        pooled.append(pixel_boxes)
        return model.decoder.pool(features, pixel_boxes)

    with torch.no_grad():
        features, boxes, states, whwh = rego_inputs(model)
        outputs = model.rego(features, pool, boxes, states, whwh)
    assert len(outputs) == 2 and all(len(layers) == 2 for layers in outputs)  # 2 decoder layers per stage
    previous = [boxes, outputs[0][-1][1]]
    for alpha, seen, prev in zip(model.rego.alphas, pooled, previous, strict=True):
        torch.testing.assert_close(seen, cxcywh_to_xyxy(enlarge_boxes(prev, alpha)) * whwh[:, None, :])
    for logits, stage_boxes in (pair for layers in outputs for pair in layers):
        assert logits.shape == (2, 8, 3) and stage_boxes.shape == (2, 8, 4)


def test_rego_configs_give_the_rows_of_tables_2_and_3():
    assert {p.name for p in (CONFIG_DIR / "rego").glob("*.py")} == {
        *REGO_ROWS,
        "appendix_table4_without_rego_at_inference.py",
    }
    for name, ratios in REGO_ROWS.items():
        cfg = LazyConfig.load(str(CONFIG_DIR / "rego" / name))
        rego = cfg.model.rego
        assert glimpse_ratios(rego.num_stages, rego.glimpse_scale, rego.alphas) == ratios, name
        assert rego.at_inference and not rego.aux_losses and rego.num_layers == 2
        assert cfg.model.num_proposals == 100 and cfg.model.decoder.stage_sharing == "all_but_first"
    cfg = LazyConfig.load(str(CONFIG_DIR / "rego" / "appendix_table4_without_rego_at_inference.py"))
    assert not cfg.model.rego.at_inference and cfg.model.rego.num_stages == 3
    assert LazyConfig.load(str(CONFIG_DIR / "recursivedet_R50_100pro_3x.py")).model.rego.num_stages == 0


def test_no_gradient_reaches_the_previous_boxes():
    model = small_rego_model(**{"rego.num_stages": 2}).train()
    features, boxes, states, whwh = rego_inputs(model)
    boxes = boxes.detach().requires_grad_()
    states = states.detach().requires_grad_()
    outputs = model.rego(features, model.decoder.pool, boxes, states, whwh)
    sum(b.sum() + logits.sum() for layers in outputs for logits, b in layers).backward()
    assert boxes.grad is None  # Appendix A.1
    assert states.grad.abs().sum() > 0  # the decoder states learn through REGO's keys and values

    # Between REGO stages: the last stage's boxes send nothing into the box branches of the earlier ones.
    model.zero_grad()
    features, boxes, states, whwh = rego_inputs(model)
    outputs = model.rego(features, model.decoder.pool, boxes, states, whwh)
    outputs[-1][-1][1].sum().backward()
    for stage in model.rego.stages[:-1]:
        assert all(p.grad is None or p.grad.abs().sum() == 0 for p in stage.box_delta.parameters())
    assert model.rego.stages[-1].box_delta.layers[-1].weight.grad.abs().sum() > 0

    # Into the decoder: REGO's losses train its object features, not its last box branch.
    model.zero_grad()
    losses = model(IMAGES)
    sum(v for k, v in losses.items() if "_rego" in k).backward()
    shared = model.decoder.stages[1]
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in shared.box_delta.parameters())
    assert shared.linear1.weight.grad.abs().sum() > 0


def test_losses_appear_for_every_rego_stage_with_its_own_matching():
    model = small_rego_model(**{"rego.num_stages": 3}).train()
    losses = model(IMAGES)
    expected = {*LOSSES, *(f"{n}_0" for n in LOSSES), *(f"{n}_rego{k}" for n in LOSSES for k in range(3))}
    assert set(losses) == expected
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())

    # Each stage is matched on its own, with the host's weights (the same SetCriterion).
    batch = model.preprocess_image(IMAGES)
    outputs, rego_outputs = model.run_detector(batch)
    targets = model.prepare_targets([x["instances"] for x in IMAGES])
    losses = model.losses(outputs, targets, rego_outputs)
    for k, layers in enumerate(rego_outputs):
        own = model.criterion(*layers[-1], targets, 3.0)
        for n in LOSSES:
            torch.testing.assert_close(losses[f"{n}_rego{k}"], own[n])

    aux = small_rego_model(**{"rego.num_stages": 2, "rego.num_layers": 3, "rego.aux_losses": True}).train()
    keys = set(aux(IMAGES))
    assert {f"{n}_rego{k}_{layer}" for n in LOSSES for k in range(2) for layer in range(2)} <= keys
    assert len(keys) == 3 * (2 + 2 * 3)


def test_inference_without_rego_equals_the_model_without_rego():
    with_rego = small_rego_model().eval()
    plain = tiny_model("recursivedet", **{"decoder.num_stages": 2}).eval()
    # strict: the host's parameters are exactly those of the model without REGO
    plain.load_state_dict({k: v for k, v in with_rego.state_dict().items() if not k.startswith("rego.")})
    with torch.no_grad():
        default = with_rego(IMAGES)
        with_rego.rego.at_inference = False
        skipped = with_rego(IMAGES)
        reference = plain(IMAGES)
        _, rego_outputs = with_rego.run_detector(with_rego.preprocess_image(IMAGES), with_rego=True)
    for a, b in zip(skipped, reference, strict=True):
        torch.testing.assert_close(a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor, rtol=0, atol=0)
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores, rtol=0, atol=0)
    # By default the last REGO stage is the output.
    last = with_rego.inference(*rego_outputs[-1][-1], [x["image"].shape[1:] for x in IMAGES])
    for r, expected, other in zip(default, last, skipped, strict=True):
        torch.testing.assert_close(r["instances"].scores, expected.scores)
        expected.pred_boxes.clip(expected.image_size)  # as detectron2's postprocessing does
        torch.testing.assert_close(r["instances"].pred_boxes.tensor, expected.pred_boxes.tensor)
        assert not torch.allclose(r["instances"].scores, other["instances"].scores)


def test_rego_parameters_scale_with_stages():
    host = sum(p.numel() for p in tiny_model("recursivedet").parameters())
    counts = []
    for k in range(1, 5):
        model = tiny_model("recursivedet", **{"rego.num_stages": k})
        rego = model.rego
        counts.append(sum(p.numel() for p in rego.parameters()))
        assert len(rego.stages) == k and sum(p.numel() for p in model.parameters()) == host + counts[-1]
        per_stage = [{id(p) for p in s.parameters()} for s in rego.stages]
        assert sum(len(s) for s in per_stage) == len(set().union(*per_stage))  # separate weights per stage
    stage = [counts[0]] + [b - a for a, b in zip(counts[:-1], counts[1:], strict=True)]
    # The state grows by c = 32 per stage: the key/value projection and the 2 fusers read c more each.
    assert [b - a for a, b in zip(stage[:-1], stage[1:], strict=True)] == [3 * 32 * 32] * 3


@pytest.mark.slow
def test_tiny_model_with_rego_overfits_two_images():
    torch.manual_seed(0)
    model = tiny_model(
        "recursivedet_rego", **{"decoder.num_stages": 1, "decoder.box_delta_init": "zero", "rego.num_stages": 2}
    ).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=1e-4)
    history = []
    for _ in range(30):
        losses = model(IMAGES)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        history.append((loss.item(), sum(v.item() for k, v in losses.items() if "_rego" in k)))
    (first, first_rego), (last, last_rego) = history[0], history[-1]
    assert last < 0.5 * first and last_rego < 0.5 * first_rego, history


def test_rego_node_of_every_config_is_off_until_given_stages_and_takes_the_decoder_sizes():
    cfg = tiny_config("recursivedet")
    assert instantiate(cfg.model).rego is None  # 0 stages: no REGO module, no parameters
    cfg.model.rego.num_stages = 2  # what the README's model.rego.num_stages=2 override does
    model = instantiate(cfg.model)
    stage = cfg.model.decoder.stage
    assert model.rego.num_stages == 2 and model.rego.dim == stage.dim
    assert model.rego.stages[0].class_logits.out_features == stage.num_classes
    cfg.model.rego.dim = stage.dim * 2
    with pytest.raises(ValueError, match="must equal the decoder width"):
        instantiate(cfg.model)
