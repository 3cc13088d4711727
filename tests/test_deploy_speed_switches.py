"""The inference switches (train.inference: bfloat16 autocast, torch.compile): same detections as float32
within their precision, the processor check, the config's errors. Their speed is the benchmark's business
(python -m recursivedet.analysis.benchmark --inference-variants), not a test's."""

import pytest
import torch
from model_factory import one_thread, tiny_model

from recursivedet.errors import ConfigValueError
from recursivedet.inference import speed
from recursivedet.inference.speed import BFloat16UnsupportedError, inference_model, with_speed
from recursivedet.inference.tta import TestTimeAugmentation
from recursivedet.model_zoo import get_config


@pytest.fixture
def model():
    torch.manual_seed(1)
    m = tiny_model("recursivedet", **{"decoder.box_delta_init": "zero"})
    for stage in m.decoder.stages:
        torch.nn.init.normal_(stage.box_delta.weight, std=0.1)
    return m.eval()


def _input():
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8), "height": 64, "width": 96}]


def _detections(model):
    with one_thread(), torch.no_grad():
        inst = model(_input())[0]["instances"]
    return inst.pred_boxes.tensor, inst.scores, inst.pred_classes


@pytest.mark.skipif(not speed.cpu_supports_bf16(), reason="no bfloat16 instructions on this processor")
def test_bf16_gives_the_float32_outputs_within_bfloat16_precision(model):
    _, scores, _ = _detections(model)
    fast = with_speed(model, bf16=True)
    _, got_scores, _ = _detections(fast)
    assert got_scores.dtype == torch.float32
    assert fast.detections_per_image == model.detections_per_image  # attributes reach the model
    # per proposal (the top-k order may change with rounding): 8 bits of mantissa through the whole model
    with one_thread(), torch.no_grad():
        images = model.preprocess_image(_input())
        (logits, boxes), _ = model.run_detector(images)[0][-1], None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast_logits, fast_boxes = model.run_detector(images)[0][-1]
    assert fast_logits.dtype == torch.bfloat16
    assert (fast_logits.float().sigmoid() - logits.sigmoid()).abs().max() < 0.02
    # normalised coordinates; random weights amplify rounding over the stages (the AP check is on the trained model)
    assert (fast_boxes.float() - boxes).abs().max() < 0.1
    assert (got_scores.sort().values - scores.sort().values).abs().max() < 0.02


def test_bf16_without_processor_support_is_one_line(model, monkeypatch):
    monkeypatch.setattr(speed, "cpu_supports_bf16", lambda: False)
    cfg = get_config("SparseRCNN/recursivedet_shapes_demo.py")
    cfg.train.inference.bf16 = True
    with pytest.raises(BFloat16UnsupportedError, match=r"train.inference.bf16=True needs a processor with bfloat16"):
        inference_model(cfg, model)


def test_switches_from_the_config(model):
    cfg = get_config("SparseRCNN/recursivedet_shapes_demo.py")
    assert inference_model(cfg, model) is model  # all off: the model itself
    cfg.dataloader.tta.enabled = True
    assert isinstance(inference_model(cfg, model), TestTimeAugmentation)
    cfg.train.inference.fast = True
    with pytest.raises(ConfigValueError, match=r"train.inference has unknown settings \['fast'\]"):
        inference_model(cfg, model)


@pytest.mark.slow
def test_compiled_model_gives_the_same_detections(model):
    expected = _detections(model)
    got = _detections(with_speed(model, compile=True))
    # inductor fuses and reorders float32 operations (and takes F.linear, not the direct oneDNN call): rounding
    torch.testing.assert_close(got[1], expected[1], rtol=0, atol=1e-4)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-2)
    assert torch.equal(got[2], expected[2])
