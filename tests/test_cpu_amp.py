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
    """On this processor bfloat16 may only be emulated (slow, same numbers): the switch is checked by what runs
    under autocast and by losses that differ from float32's by bfloat16 rounding, not more."""
    monkeypatch.setattr(train_loop, "cpu_supports_bf16", lambda: True)
    seen = []  # (training, autocast on, output dtype of the decoder's logits)
    forward = RecursiveDecoder.forward

    def recording_forward(self, *args, **kwargs):
        outputs = forward(self, *args, **kwargs)
        stages = outputs[0] if isinstance(outputs, tuple) else outputs  # (stages, features) with REGO
        seen.append((self.training, torch.is_autocast_enabled("cpu"), stages[-1][0].dtype))
        return outputs

    monkeypatch.setattr(RecursiveDecoder, "forward", recording_forward)
    losses = {}
    for amp in (False, True):
        seen.clear()
        trainer = run_main(TINY_CONFIG, f"train.amp.enabled={amp}", f"train.output_dir={tiny_run}/output_{amp}")
        losses[amp] = loss_history(trainer)
        training = {(on, dtype) for is_training, on, dtype in seen if is_training}
        evaluation = {(on, dtype) for is_training, on, dtype in seen if not is_training}
        assert training == ({(True, torch.bfloat16)} if amp else {(False, torch.float32)})
        assert evaluation == {(False, torch.float32)}  # the final evaluation
    assert all(np.isfinite(list(losses[True].values())))
    first = losses[False][0], losses[True][0]
    assert first[0] != first[1] and first[1] == pytest.approx(first[0], rel=0.05)
