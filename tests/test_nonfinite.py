"""A loss or gradient that becomes NaN or infinite stops training with one line naming the loss (and its
stage), the iteration and the lr; the last checkpoint written before it stays the last one and loads."""

import math

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import tiny_model
from training_setup import NONFINITE_CONFIG, run_cli, run_main

from recursivedet.engine import Checkpointer, NonFiniteLossError
from recursivedet.engine.hooks import _loss_place
from recursivedet.errors import NonFiniteError, UserError


def nonfinite(*, at: int, keys: list, value: float = math.nan, rank=None, gradient_only=False) -> list[str]:
    """Overrides of :data:`NONFINITE_CONFIG` (the tiny training set-up: 3 decoder stages, 6 iterations,
    checkpoints after iterations 2 and 5, lr 1e-4 after a 2-iteration warmup and 1e-5 from iteration 4) that
    make its losses ``keys`` non-finite (see :class:`model_factory.NonFiniteRecursiveDet`)."""
    return [
        f"model.at={at}",
        f"model.keys=[{','.join(keys)}]",
        f"model.value={value}",
        f"model.rank={'null' if rank is None else rank}",
        f"model.gradient_only={gradient_only}",
    ]


def assert_last_checkpoint_is(config, out, name: str):
    """``name`` is the only checkpoint and the last one, and it loads into the model with finite weights."""
    assert sorted(p.name for p in out.glob("*.pth*")) == [name]
    assert (out / "last_checkpoint").read_text() == name
    model = instantiate(LazyConfig.load(str(config)).model)
    Checkpointer(model, strict=True).load(str(out / name), checkpointables=[])
    assert all(torch.isfinite(v).all() for v in model.state_dict().values())


@pytest.mark.slow
def test_nan_loss_stops_with_one_line_and_keeps_the_last_checkpoint(tiny_run):
    config = NONFINITE_CONFIG
    out = tiny_run / "output"
    result = run_cli("--config-file", str(config), *nonfinite(at=4, keys=["loss_bbox_1"]))
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.splitlines()[-1] == (
        f"error: loss loss_bbox_1 (decoder stage 2 of 3) is nan at iteration 4 (lr 1e-05); "
        f"the last good checkpoint {out}/model_0000002.pth is kept"
    )
    assert "Traceback" not in result.stderr + result.stdout
    # the step stopped before backward: no checkpoint after it, no model_final, no evaluation
    assert_last_checkpoint_is(config, out, "model_0000002.pth")
    assert not (out / "coco_instances_results.json").exists()
    log = (out / "log.txt").read_text()
    assert "Training stopped: loss loss_bbox_1 (decoder stage 2 of 3) is nan at iteration 4" in log
    assert "Traceback" not in log


def test_inf_loss_of_the_last_stage_before_any_checkpoint(tiny_run):
    with pytest.raises(NonFiniteLossError) as info:
        run_main(NONFINITE_CONFIG, *nonfinite(at=0, keys=["loss_cls"], value=math.inf))
    assert str(info.value) == (
        "loss loss_cls (decoder stage 3 of 3) is inf at iteration 0 (lr 1e-06); no checkpoint was written before it"
    )
    assert isinstance(info.value, UserError) and isinstance(info.value, FloatingPointError)
    assert not list((tiny_run / "output").glob("*.pth"))


def test_the_earliest_stage_is_named_and_the_others_counted(tiny_run):
    """A NaN box in stage 1 makes the later stages' losses NaN too: the message names the first stage's."""
    with pytest.raises(NonFiniteLossError) as info:
        run_main(NONFINITE_CONFIG, *nonfinite(at=3, keys=["loss_cls", "loss_bbox_1", "loss_giou_0"]))
    assert str(info.value) == (
        "loss loss_giou_0 (decoder stage 1 of 3) is nan at iteration 3 (lr 0.0001), as are 2 other losses; "
        f"the last good checkpoint {tiny_run / 'output'}/model_0000002.pth is kept"
    )


@pytest.mark.parametrize("clip", [True, False])
def test_nan_gradient_with_finite_losses_stops_before_the_optimizer_step(tiny_run, clip):
    config = NONFINITE_CONFIG
    out = tiny_run / "output"
    with pytest.raises(NonFiniteLossError) as info:
        run_main(config, *nonfinite(at=3, keys=["loss_giou"], gradient_only=True), f"train.clip_grad.enabled={clip}")
    assert str(info.value) == (
        f"the gradient norm is nan at iteration 3 (lr 0.0001) while every loss is finite; "
        f"the last good checkpoint {out}/model_0000002.pth is kept"
    )
    assert_last_checkpoint_is(config, out, "model_0000002.pth")


def test_loss_names_tell_the_stage_and_sort_earliest_first():
    model = tiny_model("recursivedet_rego")  # 3 REGO stages after the decoder's 6
    names = ["loss_cls", "loss_bbox_rego0", "loss_giou_rego1_0", "loss_cls_4", "loss_cls_0", "total"]
    places = {name: _loss_place(name, model) for name in names}
    assert places["loss_cls"][1] == "decoder stage 6 of 6"
    assert places["loss_cls_0"][1] == "decoder stage 1 of 6"
    assert places["loss_bbox_rego0"][1] == "REGO stage 1 of 3"
    assert places["loss_giou_rego1_0"][1] == "REGO stage 2 of 3, layer 1"
    assert places["total"][1] == ""
    order = sorted(names, key=lambda n: places[n][0])
    assert order == ["loss_cls_0", "loss_cls_4", "loss_cls", "loss_bbox_rego0", "loss_giou_rego1_0", "total"]


@pytest.mark.slow
def test_nan_loss_in_one_of_two_processes_stops_both_with_one_line(tiny_run):
    config = NONFINITE_CONFIG
    out = tiny_run / "output"
    result = run_cli(
        "--config-file",
        str(config),
        "--num-gpus",
        "2",
        "--dist-url",
        "auto",
        *nonfinite(at=4, keys=["loss_bbox_1"], rank=1),
        "dataloader.train.mapper.augmentations.min_sizes=[64]",
    )
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: loss loss_bbox_1 (decoder stage 2 of 3) is nan at iteration 4 (lr 1e-05); "
        f"the last good checkpoint {out}/model_0000002.pth is kept"
    ]
    assert result.stderr.splitlines()[-1] == errors[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert_last_checkpoint_is(config, out, "model_0000002.pth")


def test_divergence_at_a_large_learning_rate_ends_in_the_non_finite_message(tiny_run):
    """At lr 1e4 the first step sends the weights to inf/NaN: the next forward's boxes are NaN before any loss is
    computed. They stop training with the non-finite message at that iteration, not with an index error of
    RoIAlign's level assignment."""
    with pytest.raises(NonFiniteLossError) as info:
        run_main(NONFINITE_CONFIG, "optimizer.lr=1e4", "lr_multiplier.warmup_iters=0", "train.clip_grad.enabled=False")
    assert str(info.value).startswith("32 of 32 boxes given to RoIAlign are not finite (NaN or inf)")
    assert str(info.value).endswith("at iteration 1 (lr 1e+04); no checkpoint was written before it")


def test_boxes_that_are_not_finite_stop_inference_with_one_message():
    """A model with a NaN weight (as a diverged checkpoint has) gives NaN boxes: inference stops with the
    non-finite error naming them, for RoIAlign of the decoder and of REGO alike."""
    for overrides in ({}, {"rego.num_stages": 2}):
        model = tiny_model("recursivedet", **overrides).eval()
        with torch.no_grad():
            model.decoder.stages[0].box_delta.bias.fill_(math.nan)  # stage 1's boxes: NaN
        with pytest.raises(NonFiniteError, match=r"8 of 8 boxes given to RoIAlign are not finite \(NaN or inf\)"):
            with torch.no_grad():
                model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])


def test_a_workers_failure_caused_by_a_peers_error_is_logged_in_one_line(tmp_path, monkeypatch):
    """Rank 0's all-reduce fails when rank 1 stops with a NaN loss: once rank 1 has reported its error, rank 0's
    failure is logged as a consequence in one line instead of a gloo traceback; before, it keeps its traceback."""
    import logging

    from recursivedet.engine.cli import ERROR_DIR_ENV
    from recursivedet.engine.train_loop import _UserErrorRecord

    error = RuntimeError("Connection closed by peer")
    record = logging.LogRecord("detectron2", logging.ERROR, "", 0, "Exception during training:", (), None)
    record.exc_info = (RuntimeError, error, None)
    monkeypatch.setenv(ERROR_DIR_ENV, str(tmp_path))
    assert _UserErrorRecord().filter(record) and record.exc_info is not None
    (tmp_path / "rank1.txt").write_text("loss loss_bbox_1 is nan")
    assert _UserErrorRecord().filter(record) and record.exc_info is None
    assert record.getMessage() == "Training stopped: another process stopped first (RuntimeError)"
