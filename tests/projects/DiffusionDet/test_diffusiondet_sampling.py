"""DiffusionDet's DDIM sampling: per image, a batch gives the detections of each image alone (renewal, ensemble,
NMS and image size per image) for 1 and 4 steps; the official ensemble (last step left out) differs only in
the ensemble; the noise follows the configured seed; steps and eta are checked."""

import pytest
import torch
from detectron2.config import instantiate
from model_factory import make_input, tiny_diffusiondet, tiny_diffusiondet_config

from recursivedet.errors import ConfigValueError


def _images():
    # Different sizes with the same padded size (64 x 96): features near an image's border depend on what lies
    # beyond it (RoIAlign interpolates into the padding), in a batch as in any detectron2 model.
    a, b, c = make_input(64, 96, seed=0), make_input(60, 90, seed=1), make_input(50, 70, seed=2)
    for i, x in enumerate((a, b, c)):
        x["image_id"] = 100 + i
    b["height"], b["width"] = 120, 180  # detections rescaled to another output size for this one
    return [a, b, c]


def _run(model, batch):
    batch = [dict(x, image=x["image"].to(model.pixel_mean.dtype)) for x in batch]
    with torch.no_grad():
        return [o["instances"] for o in model(batch)]


def _same(x, y):
    assert x.image_size == y.image_size and len(x) == len(y)
    assert torch.equal(x.pred_classes, y.pred_classes)
    assert torch.allclose(x.scores, y.scores, rtol=1e-9, atol=1e-12)
    assert torch.allclose(x.pred_boxes.tensor, y.pred_boxes.tensor, rtol=1e-9, atol=1e-9)


def _first_step_scores(model, batch):
    """(B, N) best class score of each proposal after the first step."""
    images = model.preprocess_image([dict(x, image=x["image"].to(model.pixel_mean.dtype)) for x in batch])
    features, whwh, extents = model.pooled_features(images, model.run_backbone(images))
    logits, _ = model.sample(features, whwh, extents, model.noise_keys(batch))[0]
    return logits.sigmoid().amax(-1)


@pytest.mark.parametrize("name", ["diffusiondet", "recursivedet_diffusiondet"])
@pytest.mark.parametrize("steps", [1, 4])
def test_batch_gives_each_image_its_own_detections(name, steps):
    # float64: the batched and single runs round differently in float32, which the renewal threshold and the
    # 6 stages of box deltas amplify
    model = tiny_diffusiondet(name, **{"sampler.steps": steps}).eval().double()
    batch = _images()
    # a renewal threshold that keeps some boxes of the untrained model and renews the others, differently per image
    scores = _first_step_scores(model, batch)

    def kept(threshold):
        return (scores > threshold).sum(1).tolist()

    # prefer a threshold under which the images keep different numbers of boxes
    # midway between two scores: a threshold equal to a score would make that box's fate depend on rounding
    values = scores.flatten().sort().values
    midpoints = ((values[1:] + values[:-1]) / 2).tolist()
    candidates = [v for v in midpoints if 0 < min(kept(v)) and max(kept(v)) < 8]
    candidates.sort(key=lambda v: len(set(kept(v))), reverse=True)
    assert candidates, scores
    model.sampler.renewal_threshold = candidates[0]
    together = _run(model, batch)
    assert sum(len(x) for x in together) > 0
    for x, inst in zip(batch, together, strict=True):
        _same(inst, _run(model, [x])[0])
        assert inst.image_size == (x.get("height", x["image"].shape[1]), x.get("width", x["image"].shape[2]))
        h, w = inst.image_size
        boxes = inst.pred_boxes.tensor
        assert (boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all()


def test_official_ensemble_differs_only_in_the_ensemble():
    model = tiny_diffusiondet(**{"sampler.steps": 4}).eval()
    batch = _images()
    images = model.preprocess_image(batch)
    features, whwh, extents = model.pooled_features(images, model.run_backbone(images))
    keys = model.noise_keys(batch)
    correct = model.sample(features, whwh, extents, keys)
    model.sampler.ensemble_last_step = False
    official = model.sample(features, whwh, extents, keys)
    assert len(correct) == len(official) == 4
    for (a, b), (c, d) in zip(correct, official, strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    assert model.sampler.ensemble_steps(official) == official[:3]
    model.sampler.ensemble_last_step = True
    assert model.sampler.ensemble_steps(correct) == correct
    with_last = model.sampler.detections(correct, whwh)
    model.sampler.ensemble_last_step = False
    without_last = model.sampler.detections(official, whwh)
    model.sampler.ensemble_last_step = True
    assert without_last[0][0].shape != with_last[0][0].shape or not torch.equal(without_last[0][0], with_last[0][0])
    # one step: nothing to ensemble, the option changes nothing
    model.sampler.steps = 1
    one = _run(model, batch[:1])[0]
    assert len(one) > 0
    model.sampler.ensemble_last_step = False
    _same(one, _run(model, batch[:1])[0])


def test_noise_follows_the_seed():
    model = tiny_diffusiondet(**{"sampler.steps": 2}).eval()
    batch = _images()[:1]
    first, again = _run(model, batch)[0], _run(model, batch)[0]
    assert len(first) > 0
    _same(first, again)
    model.sampler.seed = 1
    other = _run(model, batch)[0]
    assert other.pred_boxes.tensor.shape != first.pred_boxes.tensor.shape or not torch.allclose(
        other.pred_boxes.tensor, first.pred_boxes.tensor
    )


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("steps", 0, "steps"),
        ("steps", -2, "steps"),
        ("steps", 2.5, "steps"),
        ("steps", 1001, "exceeds"),
        ("eta", -0.1, "eta"),
        ("eta", 1.5, "eta"),
        ("renewal_threshold", 2.0, "renewal_threshold"),
        ("nms_threshold", -1.0, "nms_threshold"),
    ],
)
def test_bad_sampling_settings_are_config_errors(key, value, message):
    cfg = tiny_diffusiondet_config()
    cfg.model.sampler[key] = value
    with pytest.raises(ConfigValueError, match=message):
        instantiate(cfg.model)


def test_deterministic_sampling_with_eta_zero_and_no_renewal():
    """eta = 0 and no renewal: after the first draw the updates add no noise, so two seeds that share the first
    draw would agree; here: the loop runs any number of steps and keeps N boxes per image."""
    model = tiny_diffusiondet(**{"sampler.steps": 3, "sampler.eta": 0.0, "sampler.box_renewal": False}).eval()
    batch = _images()
    images = model.preprocess_image(batch)
    features, whwh, extents = model.pooled_features(images, model.run_backbone(images))
    predictions = model.sample(features, whwh, extents, model.noise_keys(batch))
    assert len(predictions) == 3
    assert all(b.shape == (3, model.num_proposals, 4) and torch.isfinite(b).all() for _, b in predictions)
