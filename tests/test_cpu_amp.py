"""``train.amp.enabled=True`` on the CPU: the training forward pass (losses included) runs under bfloat16
autocast on processors with bfloat16 instructions, evaluation stays float32, and a processor without them stops
with one line before training."""

import numpy as np
import pytest
import torch
from training_setup import TINY_CONFIG, loss_history, run_main

from recursivedet.engine import DeviceError, train_loop
from recursivedet.modeling import RecursiveDecoder


def test_a_processor_without_bfloat16_stops_before_training(tiny_run, monkeypatch):
    monkeypatch.setattr(train_loop, "cpu_supports_bf16", lambda: False)
    with pytest.raises(DeviceError, match=r"^train\.amp\.enabled=True on the CPU trains in bfloat16, which needs"):
        run_main(TINY_CONFIG, "train.amp.enabled=True")
    assert not (tiny_run / "output" / "model_final.pth").exists()


def test_the_training_forward_runs_in_bfloat16_and_evaluation_in_float32(tiny_run, monkeypatch):
    """What runs under autocast: the decoder's outputs are bfloat16 in every training step (float32 without the
    switch, as every other training test runs) and float32 in the final evaluation."""
    monkeypatch.setattr(train_loop, "cpu_supports_bf16", lambda: True)
    seen = []  # (training, autocast on, dtype of the last stage's logits)
    forward = RecursiveDecoder.forward

    def recording_forward(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        stages = outputs[0] if isinstance(outputs, tuple) else outputs  # (stages, features) with REGO
        seen.append((self.training, torch.is_autocast_enabled("cpu"), stages[-1][0].dtype))
        return outputs

    monkeypatch.setattr(RecursiveDecoder, "forward", recording_forward)
    trainer = run_main(TINY_CONFIG, "train.amp.enabled=True")
    assert {(on, dtype) for training, on, dtype in seen if training} == {(True, torch.bfloat16)}
    assert {(on, dtype) for training, on, dtype in seen if not training} == {(False, torch.float32)}
    assert sum(training for training, _, _ in seen) == 6  # every iteration
    assert all(np.isfinite(list(loss_history(trainer).values())))
