"""--resume continues exactly: same losses and bitwise-equal weights as an uninterrupted run, also after
SIGKILL; checkpoints are written atomically; unusable checkpoints fail with their name."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from training_setup import REPO, TINY_CONFIG, loss_history, run_cli, run_main, state_dict_of, subprocess_env

from recursivedet.engine import Checkpointer, CheckpointError
from recursivedet.engine import checkpoint as checkpoint_module

# random crop and dropout: the resumed run must replay augmentations and RNG draws too
RANDOM = ["dataloader.train.mapper.augmentations.random_crop=True", "model.decoder.stage.dropout=0.1"]


def assert_same_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tiny_run):
    trainer = run_main(TINY_CONFIG, *RANDOM)
    full_losses = loss_history(trainer)

    # a run "stopped" after iteration 2: its output dir holds that checkpoint only
    out = tiny_run / "resumed"
    out.mkdir()
    shutil.copy(tiny_run / "output" / "model_0000002.pth", out)
    (out / "last_checkpoint").write_text("model_0000002.pth")
    # the interrupted run had logged iterations after its checkpoint: the resumed run logs them again
    shutil.copy(tiny_run / "output" / "metrics.json", out)
    # a different number of data workers does not change the data
    trainer = run_main(TINY_CONFIG, *RANDOM, f"train.output_dir={out}", "dataloader.train.num_workers=2", resume=True)
    resumed_losses = loss_history(trainer)

    assert sorted(resumed_losses) == [3, 4, 5]
    assert resumed_losses == {i: full_losses[i] for i in (3, 4, 5)}
    logged = [json.loads(line)["iteration"] for line in (out / "metrics.json").read_text().splitlines()]
    full = [json.loads(line)["iteration"] for line in (tiny_run / "output/metrics.json").read_text().splitlines()]
    assert logged == full  # as the uninterrupted run logged them: no iteration twice
    assert_same_weights(state_dict_of(out / "model_final.pth"), state_dict_of(tiny_run / "output/model_final.pth"))


def _train_process(config, *opts):
    cmd = [sys.executable, str(REPO / "train_net.py"), "--config-file", str(config), *opts]
    return subprocess.Popen(cmd, cwd=REPO, env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(tiny_run):
    opts = [*RANDOM, "train.max_iter=40", "train.checkpointer.period=4", "lr_multiplier.steps=[30]"]
    reference = _train_process(TINY_CONFIG, *opts, f"train.output_dir={tiny_run / 'reference'}")
    out = tiny_run / "output"
    victim = _train_process(TINY_CONFIG, *opts)
    try:
        deadline = time.time() + 180
        while not (out / "last_checkpoint").exists():  # the first checkpoint, after iteration 3
            assert victim.poll() is None, victim.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "no checkpoint written"
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    finally:
        victim.kill()
    assert not (out / "model_final.pth").exists(), "training ended before it was killed"
    assert reference.wait(timeout=240) == 0, reference.stderr.read().decode()[-3000:]

    resumed = run_cli("--config-file", str(TINY_CONFIG), "--resume", *opts)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    started = re.search(r"Starting training from iteration (\d+)", resumed.stdout)
    assert started and int(started.group(1)) >= 4
    assert not list(out.glob("*.tmp")), "a save cut by the kill leaves no temporary file after the restart"
    assert_same_weights(state_dict_of(out / "model_final.pth"), state_dict_of(tiny_run / "reference/model_final.pth"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = torch.nn.Linear(2, 2)
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_0000000")
    before = (tmp_path / "model_0000000.pth").read_bytes()

    def crash(data, f):
        f.write(b"partial")
        raise KeyboardInterrupt  # e.g. killed while writing

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with torch.no_grad():
        model.weight.add_(1)
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000000")
    with pytest.raises(KeyboardInterrupt):
        checkpointer.save("model_0000001")
    assert (tmp_path / "model_0000000.pth").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def test_resume_from_a_corrupt_or_mismatched_checkpoint_names_it(tiny_run):
    config = TINY_CONFIG
    run_main(config, "train.max_iter=3")
    out = tiny_run / "output"
    # a checkpoint of another architecture (more proposals): not silently half-loaded
    with pytest.raises(CheckpointError, match=f"checkpoint {out / 'model_final.pth'} does not fit.*another shape"):
        run_main(config, "train.max_iter=3", "model.num_proposals=12", resume=True)
    (out / "model_final.pth").write_bytes(b"\0" * 100)
    with pytest.raises(
        CheckpointError, match=f"cannot read checkpoint {out / 'model_final.pth'}: not a PyTorch checkpoint"
    ):
        run_main(config, "train.max_iter=3", resume=True)
    (out / "last_checkpoint").write_text("model_0000099.pth")
    with pytest.raises(CheckpointError, match=r"model_0000099.pth \(named by (\S*/)?last_checkpoint\) does not exist"):
        run_main(config, "train.max_iter=3", resume=True)
