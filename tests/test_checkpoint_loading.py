"""Loading a checkpoint never runs code stored in it (converter, ``load_weights``, ``--resume``); every
unusable file is reported with its name and what is wrong with it; training starts clean after a kill."""

import errno
import logging
import os
import pickle
import resource
import signal
from collections import OrderedDict

import numpy as np
import pytest
import torch
from training_setup import TINY_CONFIG, run_main, run_python

from recursivedet.engine import Checkpointer, CheckpointError, load_weights


class CreatesFile:
    """Unpickling this calls ``open(path, "w")``: a harmless stand-in for ``os.system`` in a crafted file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def malicious(tmp_path):
    """(marker file, crafted .pth, crafted .pkl): unpickling either creates the marker."""
    marker = tmp_path / "code_ran"
    pth, pkl = tmp_path / "malicious.pth", tmp_path / "malicious.pkl"
    torch.save({"model": {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}, "extra": CreatesFile(marker)}, pth)
    with open(pkl, "wb") as f:
        pickle.dump({"model": {"weight": CreatesFile(marker)}, "__author__": "someone"}, f, protocol=2)
    # the payloads are live: a plain unpickling runs them
    torch.load(pth, weights_only=False)
    assert marker.exists()
    marker.unlink()
    with open(pkl, "rb") as f:
        pickle.load(f)
    assert marker.exists()
    marker.unlink()
    return marker, pth, pkl


PTH_REFUSED = (
    "the file contains Python objects other than tensors (io.open); they are not loaded, since unpickling them "
    "can run arbitrary code. If you trust the file, load it yourself and save its state dict of tensors with "
    "torch.save"
)
PKL_REFUSED = (
    "the file contains Python objects other than numpy arrays (io.open); they are not loaded, since unpickling "
    "them can run arbitrary code"
)


def run_convert_cli(*argv: str):
    """``python -m recursivedet.convert argv...`` in a subprocess."""
    return run_python("-m", "recursivedet.convert", *argv, timeout=300)


@pytest.mark.slow
def test_converter_runs_no_code_from_the_file(malicious, tmp_path):
    marker, pth, _ = malicious
    result = run_convert_cli(str(pth), str(tmp_path / "out.pth"))
    assert not marker.exists(), "code stored in the file ran"
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == f"error: cannot read checkpoint {pth}: {PTH_REFUSED}"
    assert not (tmp_path / "out.pth").exists()


@pytest.mark.slow
def test_converter_prints_no_runpy_warning():
    result = run_convert_cli("--help")
    assert result.returncode == 0
    assert "usage:" in result.stdout
    assert "RuntimeWarning" not in result.stderr and "sys.modules" not in result.stderr, result.stderr


def error_of(load) -> Exception:
    """The exception ``load()`` raises (a test fails if it raises none)."""
    try:
        load()
    except Exception as e:
        return e
    raise AssertionError("no error")


def test_load_weights_runs_no_code_from_pth_or_pkl(malicious):
    marker, pth, pkl = malicious
    error = error_of(lambda: load_weights(torch.nn.Linear(3, 2), str(pth)))
    assert not marker.exists(), "code stored in the file ran"
    assert isinstance(error, CheckpointError) and str(error) == f"cannot read checkpoint {pth}: {PTH_REFUSED}"
    error = error_of(lambda: load_weights(torch.nn.Linear(3, 2), str(pkl)))
    assert not marker.exists(), "code stored in the file ran"
    assert isinstance(error, CheckpointError) and str(error) == f"cannot read checkpoint {pkl}: {PKL_REFUSED}"


def test_resume_runs_no_code_and_names_a_garbled_last_checkpoint(malicious, tiny_run):
    marker, pth, _ = malicious
    config = TINY_CONFIG
    out = tiny_run / "output"
    out.mkdir()
    pth.rename(out / "model_0000002.pth")
    (out / "last_checkpoint").write_text("model_0000002.pth")
    error = error_of(lambda: run_main(config, "train.max_iter=3", resume=True))
    assert not marker.exists(), "code stored in the file ran"
    assert isinstance(error, CheckpointError)
    assert str(error) == f"cannot read checkpoint {out / 'model_0000002.pth'}: {PTH_REFUSED}"

    (out / "last_checkpoint").write_bytes(bytes(range(128, 256)))  # was a UnicodeDecodeError
    with pytest.raises(CheckpointError) as error:
        run_main(config, "train.max_iter=3", resume=True)
    assert str(error.value) == (
        f"the last_checkpoint file in {out} is unreadable (corrupt): it must hold the name of the latest checkpoint "
        "in that folder, e.g. model_0004999.pth. Write that name into it, or delete it to start from "
        "train.init_checkpoint instead (--resume then finds no checkpoint)"
    )


def test_unreadable_files_are_named_with_what_is_wrong(tmp_path):
    def message(path) -> str:
        with pytest.raises(CheckpointError) as error:
            load_weights(torch.nn.Linear(3, 2), str(path))
        return str(error.value)

    random_bytes = tmp_path / "random.pth"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(1000))  # was: "re-run with weights_only=False"
    assert message(random_bytes) == (
        f"cannot read checkpoint {random_bytes}: not a PyTorch checkpoint (the file is corrupt or of another kind; "
        "1000 bytes)"
    )
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")  # was: "KeyError: 101"
    assert message(text) == (
        f"cannot read checkpoint {text}: not a PyTorch checkpoint (the file is corrupt or of another kind; 17 bytes)"
    )
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert message(empty) == f"cannot read checkpoint {empty}: the file is empty"
    whole = tmp_path / "whole.pth"
    torch.save({"model": {"weight": torch.zeros(100, 100)}}, whole)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(whole.read_bytes()[:20000])
    assert message(truncated) == (
        f"cannot read checkpoint {truncated}: the PyTorch checkpoint is corrupt (truncated or damaged, e.g. by an "
        "interrupted copy; 20000 bytes)"
    )
    plain_pickle = tmp_path / "plain.pth"
    plain_pickle.write_bytes(pickle.dumps({"weight": np.zeros(3)}, protocol=4))
    assert message(plain_pickle) == (
        f"cannot read checkpoint {plain_pickle}: a plain Python pickle, not a PyTorch checkpoint (torch.save); "
        "it is not unpickled, since that can run arbitrary code"
    )
    folder = tmp_path / "run"
    folder.mkdir()
    assert message(folder) == f"checkpoint {folder} is a directory, not a checkpoint file (no .pth in it)"
    torch.save({"model": torch.nn.Linear(3, 2).state_dict()}, folder / "model_final.pth")
    assert message(folder) == (  # was: "does not exist"
        f"checkpoint {folder} is a directory, not a checkpoint file: give a checkpoint file in it, "
        f"e.g. {folder / 'model_final.pth'}"
    )
    assert message(tmp_path / "nothing.pth") == f"checkpoint file {tmp_path / 'nothing.pth'} does not exist"


def test_model_zoo_pickles_of_numpy_arrays_still_load(tmp_path):
    """detectron2's format as it is; Caffe2's (weights under "blobs", momenta dropped) by name matching;
    numpy 1.x spellings and Python 2 style (protocol 2) pickles included."""
    source = torch.nn.Linear(3, 2)
    detectron2_format = tmp_path / "d2.pkl"
    arrays = OrderedDict((k, v.detach().numpy()) for k, v in source.state_dict().items())
    detectron2_format.write_bytes(pickle.dumps({"model": arrays, "__author__": "someone"}, protocol=2))
    model = torch.nn.Linear(3, 2)
    load_weights(model, str(detectron2_format))
    assert torch.equal(model.weight, source.weight) and torch.equal(model.bias, source.bias)

    blobs = {"fc_w": np.full((2, 3), 1.5, np.float32), "fc_b": np.array([2.0, 3.0], np.float32)}
    blobs["fc_w_momentum"] = np.zeros((2, 3), np.float32)
    data = pickle.dumps({"blobs": blobs, "cfg": b"yaml"}, protocol=2)
    caffe2_format = tmp_path / "c2.pkl"
    caffe2_format.write_bytes(data.replace(b"numpy._core.multiarray", b"numpy.core.multiarray"))
    model = torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(3, 2)))
    load_weights(model, str(caffe2_format))
    assert (model.fc.weight == 1.5).all() and model.fc.bias.tolist() == [2.0, 3.0]

    garbage = tmp_path / "garbage.pkl"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointError) as error:
        load_weights(model, str(garbage))
    assert str(error.value) == (
        f"cannot read checkpoint {garbage}: not a pickle of numpy arrays (the file is corrupt or of another kind; "
        "300 bytes)"
    )


def test_everything_a_checkpoint_stores_loads_with_weights_only(tmp_path):
    """Model, optimizer, grad scaler and trainer-like state: a save/load round trip with weights_only=True."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    scaler.scale(model(torch.ones(4, 3)).sum()).backward()
    scaler.step(optimizer)
    scaler.update()
    Checkpointer(model, str(tmp_path), optimizer=optimizer, scaler=scaler).save("model_0000000", iteration=0)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(tmp_path / "model_0000000.pth")) == []

    fresh = torch.nn.Linear(3, 2)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    fresh_scaler = torch.amp.GradScaler("cpu")
    checkpointer = Checkpointer(fresh, str(tmp_path), optimizer=fresh_optimizer, scaler=fresh_scaler)
    assert checkpointer.resume_or_load("", resume=True) == {"iteration": 0}
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_scaler.state_dict() == scaler.state_dict()
    assert torch.equal(
        fresh_optimizer.state_dict()["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"]
    )


class Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


@pytest.fixture
def checkpointer_log():
    """What the Checkpointer logs (detectron2's logging setup does not let records reach pytest's caplog)."""
    handler = Lines()
    logger = logging.getLogger("fvcore.common.checkpoint")
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)


def test_resume_without_a_checkpoint_says_so_and_trains_from_scratch(tiny_run, checkpointer_log):
    trainer = run_main(TINY_CONFIG, "train.max_iter=2", resume=True)
    assert trainer.iter == 2 and (tiny_run / "output" / "model_final.pth").exists()
    assert (
        "WARNING",
        f"--resume: no checkpoint found in {tiny_run / 'output'} (no last_checkpoint file); training starts from "
        "scratch (train.init_checkpoint is empty)",
    ) in checkpointer_log


def test_restart_removes_leftovers_of_a_killed_save_and_keeps_max_to_keep(tiny_run, checkpointer_log):
    config = TINY_CONFIG
    out = tiny_run / "output"
    keep_two = ["train.checkpointer.period=1", "train.checkpointer.max_to_keep=2"]
    run_main(config, "train.max_iter=3", *keep_two)
    assert sorted(p.name for p in out.glob("model_*")) == ["model_0000001.pth", "model_0000002.pth", "model_final.pth"]
    # what SIGKILL during a save leaves, and files of the user that look alike
    leftovers = ["model_0000003.pth.tmp", "last_checkpoint.tmp"]
    others = ["notes.tmp", "model_0000000.pth.bak", "my_model.pth", "model_best.pth"]
    for name in leftovers + others:
        (out / name).write_bytes(b"x")

    trainer = run_main(config, "train.max_iter=6", *keep_two, resume=True)
    assert trainer.iter == 6
    # fvcore alone kept model_0000001 and model_0000002: it counted only the files of the current process
    assert sorted(p.name for p in out.glob("model_*")) == [
        "model_0000000.pth.bak",
        "model_0000004.pth",
        "model_0000005.pth",
        "model_best.pth",
        "model_final.pth",
    ]
    assert not any((out / name).exists() for name in leftovers)
    assert all((out / name).exists() for name in others)
    assert ("INFO", f"Removing {out / 'model_0000003.pth.tmp'}, left by an interrupted save") in checkpointer_log


def test_a_checkpoint_that_cannot_be_written_is_one_line_naming_it(tmp_path):
    """A full disk (here: a file size limit, which fails writes with EFBIG as a full disk does) during a save:
    one error naming the file and the folder; the earlier checkpoint and last_checkpoint stay, no partial file."""
    model = torch.nn.Linear(512, 512)
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_0000000")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))
    try:
        with pytest.raises(CheckpointError) as info:
            checkpointer.save("model_0000001")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    message = str(info.value)
    assert message.startswith(f"could not write the checkpoint {tmp_path / 'model_0000001.pth'}")
    assert message.endswith(f"{tmp_path} keeps its earlier checkpoints") and "\n" not in message
    assert os.strerror(errno.EFBIG) in message or "disk full" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000000.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000000.pth"


def test_a_tensor_of_another_shape_is_named_once(tmp_path):
    source, target = torch.nn.Sequential(torch.nn.Linear(4, 3)), torch.nn.Sequential(torch.nn.Linear(4, 5))
    torch.save({"model": source.state_dict()}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError) as info:
        Checkpointer(target, strict=True).load(str(tmp_path / "w.pth"), checkpointables=[])
    message = str(info.value)
    assert "2 with another shape (0.weight (3, 4)->(5, 4), 0.bias (3,)->(5,))" in message and "missing" not in message
