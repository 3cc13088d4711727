"""The meta-architecture end to end on a tiny backbone: shapes, losses, gradients, inference."""

from unittest import mock

import pytest
import torch
from model_factory import make_input, tiny_model

from recursivedet.modeling import linear as linear_module
from recursivedet.modeling.stage import DecoderStage

TWO_IMAGES = [
    make_input(96, 128, [[10, 12, 60, 70], [50, 20, 120, 90]], [0, 2], seed=1),
    make_input(80, 100, [[5, 5, 40, 50]], [1], seed=2),
]


def test_training_returns_losses_for_every_stage():
    model = tiny_model("recursivedet").train()
    losses = model(TWO_IMAGES)
    expected = {"loss_cls", "loss_bbox", "loss_giou"}
    expected |= {f"{k}_{t}" for k in ("loss_cls", "loss_bbox", "loss_giou") for t in range(5)}
    assert set(losses) == expected
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())


def test_loss_keys_follow_the_number_of_stages_and_deep_supervision():
    model = tiny_model("recursivedet", **{"decoder.num_stages": 3}).train()
    assert len(model(TWO_IMAGES)) == 3 * 3
    model = tiny_model("recursivedet", deep_supervision=False).train()
    assert set(model(TWO_IMAGES)) == {"loss_cls", "loss_bbox", "loss_giou"}


def test_image_without_objects_trains():
    model = tiny_model("recursivedet").train()
    losses = model([make_input(64, 64), make_input(64, 96)])
    assert losses["loss_bbox"].item() == 0 and losses["loss_giou"].item() == 0
    assert losses["loss_cls"].item() > 0
    sum(losses.values()).backward()  # all proposals negative: still a gradient for the classifier
    assert model.decoder.stages[1].class_logits.bias.grad.abs().sum() > 0


def test_stage_outputs_and_detached_boxes(monkeypatch):
    model = tiny_model("recursivedet").train()
    seen = []
    original = DecoderStage.forward

    def spy(self, features, boxes, roi, roi_pos=None, box_sine=None, passes=1):
        seen.append((features.shape, boxes.shape, roi.shape, boxes.requires_grad, features.requires_grad, passes))
        return original(self, features, boxes, roi, roi_pos, box_sine, passes)

    monkeypatch.setattr(DecoderStage, "forward", spy)
    images = model.preprocess_image(TWO_IMAGES)
    outputs = model.run_decoder(images)
    assert len(outputs) == 6 and len(seen) == 6
    for logits, boxes in outputs:
        assert logits.shape == (2, 8, 3) and boxes.shape == (2, 8, 4)
        assert ((boxes >= 0) & (boxes <= 1)).all()
    for t, (feat, boxes, roi, boxes_grad, feat_grad, passes) in enumerate(seen):
        assert feat == (2, 8, 32) and boxes == (2, 8, 4) and roi == (16, 49, 32)
        assert passes == (1 if t == 0 else 2)  # official: one pass in the independent first stage
        if t > 0:
            assert not boxes_grad, f"boxes entering stage {t} must be detached"
            assert feat_grad, "proposal features carry gradients between stages"
    assert seen[0][3], "the learnable initial proposal boxes are trained through the first stage"


@pytest.mark.parametrize("stage", range(1, 6))
def test_shared_stage_gets_gradients_from_every_stage_it_serves(stage):
    model = tiny_model("recursivedet").train()
    outputs = model.run_decoder(model.preprocess_image(TWO_IMAGES))
    targets = model.prepare_targets([x["instances"] for x in TWO_IMAGES])
    losses = model.criterion(*outputs[stage], targets, 3.0)
    sum(losses.values()).backward()
    first, shared = model.decoder.stages
    assert shared.dynamic_conv.dynamic_layer.weight.grad.abs().sum() > 0
    assert shared.class_logits.weight.grad.abs().sum() > 0
    # The first stage feeds later stages through the proposal features (not the detached boxes).
    assert first.dynamic_conv.out_layer.weight.grad.abs().sum() > 0
    assert first.class_logits.weight.grad is None or first.class_logits.weight.grad.abs().sum() == 0


def test_recdy_adds_no_parameters():
    one_pass = tiny_model("recursivedet", **{"decoder.dynamic_passes": 1, "decoder.first_stage_dynamic_passes": 1})
    two_pass = tiny_model("recursivedet", **{"decoder.dynamic_passes": 2})
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(one_pass) == count(two_pass)


def test_sharing_modes_count_stage_modules():
    for sharing, modules in [("none", 6), ("all", 1), ("all_but_first", 2)]:
        model = tiny_model("recursivedet", **{"decoder.stage_sharing": sharing})
        assert len(model.decoder.stages) == modules
        used = {id(model.decoder.stage_module(t)) for t in range(6)}
        assert len(used) == modules


def test_inference_outputs_detections_in_original_image_size():
    model = tiny_model("recursivedet", detections_per_image=10).eval()
    inputs = [dict(x, height=2 * x["image"].shape[1], width=2 * x["image"].shape[2]) for x in TWO_IMAGES]
    with torch.no_grad():
        results = model(inputs)
    for r, x in zip(results, inputs, strict=True):
        inst = r["instances"]
        assert inst.image_size == (x["height"], x["width"])
        assert len(inst) <= 10 and inst.scores.shape == (len(inst),)
        assert ((inst.scores >= 0) & (inst.scores <= 1)).all()
        assert inst.pred_classes.max() < 3
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 2] <= x["width"]).all() and (boxes[:, 3] <= x["height"]).all()


def test_topk_picks_highest_scores_over_proposals_and_classes():
    model = tiny_model("recursivedet", detections_per_image=5).eval()
    logits = torch.randn(2, 8, 3)
    boxes = torch.rand(2, 8, 4) * 0.5 + 0.25
    results = model.inference(logits, boxes, [(100, 200), (50, 60)])
    for i, r in enumerate(results):
        expected, index = logits[i].sigmoid().flatten().topk(5)
        torch.testing.assert_close(r.scores, expected)
        assert r.pred_classes.tolist() == (index % 3).tolist()
        h, w = [(100, 200), (50, 60)][i]
        b = boxes[i, index // 3]
        xyxy = torch.stack(
            [b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1
        )
        torch.testing.assert_close(r.pred_boxes.tensor, xyxy * torch.tensor([w, h, w, h]))


@pytest.mark.parametrize("name", ["recursivedet", "sparse_rcnn"])
def test_batch_inference_equals_one_by_one(name):
    """Per-image results do not depend on the batch, up to float32 noise, wherever the backbone sees the
    same pixels: images of different sizes with the same padded size, and the image that sets the padded
    size. (A smaller image padded further differs near its border through the backbone's convolutions,
    as in any detectron2 model; the decoder adds nothing batch-dependent, see the PE test below.)"""
    # float64: float32 rounding differs with the batch (the kernels block the work differently) and six
    # stages of random box refinements amplify it; in float64 any real dependence on the batch would stand out
    model = tiny_model(name).double().eval()
    close = dict(rtol=1e-9, atol=1e-7)
    batches = [
        ([make_input(90, 120, seed=3), make_input(70, 100, seed=4)], [0, 1]),
        ([make_input(64, 64, seed=5), make_input(130, 200, seed=6)], [1]),
    ]
    with torch.no_grad():
        for batch, comparable in batches:
            together = model(batch)
            for i in comparable:
                alone = model([batch[i]])[0]["instances"]
                torch.testing.assert_close(together[i]["instances"].pred_boxes.tensor, alone.pred_boxes.tensor, **close)
                torch.testing.assert_close(together[i]["instances"].scores, alone.scores, **close)


def test_image_position_encoding_ignores_batch_padding():
    model = tiny_model("recursivedet").eval()
    alone = model.position_extents([(64, 64)])
    together = model.position_extents([(64, 64), (130, 200)])
    for a, t, stride in zip(alone, together, model.strides, strict=True):
        torch.testing.assert_close(t[0], a[0])
        assert t[1].tolist() == [-(-160 // stride), -(-224 // stride)]  # padded to 32, in cells


@pytest.mark.parametrize("name", ["recursivedet", "sparse_rcnn"])
def test_fast_paths_give_the_same_model_outputs(name):
    """Closed-form RoI PE, gathered RoIAlign, oneDNN linear layers and the channels-last backbone against the
    plain way of computing each (pooled PE maps, ROIPooler, F.linear, standard layout). float64 shows that
    they compute the same function (the oneDNN path is float32-only); float32 that they agree to rounding,
    which six stages of random box refinements amplify (hence the per-stage, looser check there)."""

    def build(dtype, fast: bool):
        model = (
            tiny_model(name)
            if fast
            else tiny_model(
                name, channels_last=False, fold_frozen_batchnorm=False, **{"decoder.gather_roi_align": False}
            )
        )
        if not fast:
            model.decoder.analytic_pe = None
        with torch.no_grad():  # refinements of a trained model's size: random ones send boxes far off the image
            for stage in model.decoder.stages:
                stage.box_delta.weight.mul_(0.1)
        return model.to(dtype).eval()

    def run(model, fast: bool, fn):
        onednn = linear_module._ONEDNN_LINEAR if fast else None
        with (
            torch.no_grad(),
            mock.patch.object(linear_module, "_ONEDNN_LINEAR", onednn),
            mock.patch.object(linear_module, "_KERNEL", "onednn"),  # whichever this machine measured faster
        ):
            return fn(model)

    detections = [run(build(torch.float64, fast), fast, lambda m: m(TWO_IMAGES)) for fast in (True, False)]
    for a, b in zip(*detections, strict=True):
        torch.testing.assert_close(
            a["instances"].pred_boxes.tensor, b["instances"].pred_boxes.tensor, rtol=1e-9, atol=1e-8
        )
        torch.testing.assert_close(a["instances"].scores, b["instances"].scores, rtol=1e-9, atol=1e-10)

    stages = [
        run(build(torch.float32, fast), fast, lambda m: m.run_decoder(m.preprocess_image(TWO_IMAGES)))
        for fast in (True, False)
    ]
    for (logits, boxes), (plain_logits, plain_boxes) in zip(*stages, strict=True):
        torch.testing.assert_close(boxes, plain_boxes, rtol=1e-3, atol=1e-3)  # normalised: 0.1 px at 100 px
        torch.testing.assert_close(logits, plain_logits, rtol=1e-3, atol=1e-2)


def test_decoder_receives_maps_in_the_layout_it_reads_fastest():
    for gather, layout in ((True, torch.channels_last), (False, torch.contiguous_format)):
        model = tiny_model("recursivedet", **{"decoder.gather_roi_align": gather}).eval()
        with torch.no_grad():
            images = model.preprocess_image(TWO_IMAGES)
            features = model.decode(images, model.run_backbone(images)).features
        assert all(f.is_contiguous(memory_format=layout) for f in features), gather


@pytest.mark.slow
def test_tiny_model_overfits_two_images():
    torch.manual_seed(0)
    model = tiny_model("recursivedet", **{"decoder.box_delta_init": "zero"}).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    first = None
    for _ in range(60):
        loss = sum(model(TWO_IMAGES).values())
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        first = first if first is not None else loss.item()
    assert loss.item() < 0.5 * first, (first, loss.item())


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="stage_sharing"):
        tiny_model("recursivedet", **{"decoder.stage_sharing": "some"})
    with pytest.raises(ValueError, match="centerness"):
        tiny_model("recursivedet", **{"decoder.stage.centerness": "dynamic"})
    with pytest.raises(ValueError, match="needs box_pe"):
        tiny_model("recursivedet", **{"decoder.stage.box_pe_dynamic_conv": False})
    with pytest.raises(ValueError, match="box_refinement"):
        tiny_model("recursivedet", **{"decoder.stage.box_refinement": "exp"})
    with pytest.raises(ValueError, match="decoder width"):
        tiny_model("recursivedet", **{"decoder.stage.dim": 64})


def test_grid_proposal_boxes_tile_the_image():
    from recursivedet.projects.SparseRCNN.modeling import initial_boxes

    boxes = initial_boxes("grid", 12)  # 4 columns x 3 rows
    assert boxes.shape == (12, 4)
    torch.testing.assert_close(boxes[:, 2:], torch.tensor([0.25, 1 / 3]).expand(12, 2))
    assert sorted({round(x, 4) for x in boxes[:, 0].tolist()}) == [0.125, 0.375, 0.625, 0.875]
    assert (initial_boxes("image", 3) == torch.tensor([0.5, 0.5, 1.0, 1.0])).all()
    with pytest.raises(ValueError, match="proposal_box_init"):
        initial_boxes("random", 3)
