"""train_net.py ends every user error with one line ``error: ...`` and exit status 2, found before any
process starts when it can be (config, override, datasets and their categories, checkpoint file, device,
model sizes); the few found while running (unreadable checkpoint, a dataset without annotations, a missing
image) are one line too (from several processes: see test_nonfinite)."""

import pytest
import torch
from model_factory import tiny_model
from training_setup import TINY_CONFIG, run_main, run_python, subprocess_env, tiny_run_at, train_net

from recursivedet.data import DatasetError
from recursivedet.engine import ConfigValueError
from recursivedet.errors import UserError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny run (datasets tiny_train / tiny_val with 3 categories, for the tests of this module), its config
    and a few files next to it."""
    with tiny_run_at(tmp_path_factory.mktemp("errors")) as root:
        (root / "weights.pth").write_bytes(b"not a checkpoint")
        (root / "folder").mkdir()
        (root / "syntax.py").write_text("train = dict(\n    max_iter=3,\n")
        yield root, TINY_CONFIG


def run_command_line(capsys, *argv: str) -> tuple[int, str]:
    """``train_net.py argv`` in this process: (exit status, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(list(argv))
    return exit_info.value.code, capsys.readouterr().err


# (command-line arguments, the error line) with {root} for the set-up folder, {config} for its config
BEFORE_START = [
    (["train.max_iter=abc"], "override 'train.max_iter=abc': train.max_iter expects int (currently 6), got str 'abc'"),
    (
        ["--config-file", "{root}/missing.py"],
        "config file {root}/missing.py does not exist, nor is it a config name "
        "(python -m recursivedet.model_zoo lists the names)",
    ),
    (["--config-file", "{root}/folder"], "config file {root}/folder is a directory, not a config file"),
    (["--config-file", "{root}/syntax.py"], "config file {root}/syntax.py, line 1: '(' was never closed"),
    (
        ["train.init_checkpoint={root}/nothing.pth"],
        "checkpoint file {root}/nothing.pth (train.init_checkpoint) does not exist",
    ),
    (
        ["--eval-only", "train.init_checkpoint={root}/folder"],
        "checkpoint {root}/folder (train.init_checkpoint) is a directory, not a checkpoint file",
    ),
    (["--eval-only"], "evaluation needs weights: set train.init_checkpoint=/path/to/model.pth"),
    (
        ["dataloader.train.dataset.names=tiny_trian"],
        "dataset 'tiny_trian' is not registered; did you mean tiny_train, tiny_val? Register a COCO-format "
        "dataset with recursivedet.data.register_coco_dataset(name, json_file, image_root).",
    ),
    (
        ["dataloader.train.dataset.names=xyzzy"],
        "dataset 'xyzzy' is not registered. Register a COCO-format "
        "dataset with recursivedet.data.register_coco_dataset(name, json_file, image_root).",
    ),
    (
        ["model.decoder.stage.num_classes=80"],
        "the model has 80 classes (model.decoder.stage.num_classes) but dataset 'tiny_train' has 3 categories; "
        "set model.decoder.stage.num_classes=3",
    ),
    (
        ["model.decoder.stage.num_classes=2"],
        "the model has 2 classes (model.decoder.stage.num_classes) but dataset 'tiny_train' has 3 categories; "
        "set model.decoder.stage.num_classes=3",
    ),
    (
        ["model.rego.num_stages=2", "model.rego.num_classes=4"],
        "the model has 4 classes (model.rego.num_classes) but dataset 'tiny_train' has 3 categories; "
        "set model.rego.num_classes=3",
    ),
    (  # evaluation checks the test dataset
        ["--eval-only", "train.init_checkpoint={root}/weights.pth", "model.decoder.stage.num_classes=4"],
        "the model has 4 classes (model.decoder.stage.num_classes) but dataset 'tiny_val' has 3 categories; "
        "set model.decoder.stage.num_classes=3",
    ),
    (["model.num_proposals=0"], "model.num_proposals must be at least 1, got 0"),
    (["model.num_proposals=-5"], "model.num_proposals must be at least 1, got -5"),
    (["model.decoder.num_stages=0"], "model.decoder.num_stages must be at least 1, got 0"),
    (  # several processes: still checked here, before any starts
        ["--num-gpus", "2", "--dist-url", "auto", "dataloader.train.total_batch_size=3"],
        "dataloader.train.total_batch_size=3 must be a positive multiple of the number of processes (2)",
    ),
    (
        ["--num-gpus", "2", "--dist-url", "auto", "model.decoder.stage.num_classes=5"],
        "the model has 5 classes (model.decoder.stage.num_classes) but dataset 'tiny_train' has 3 categories; "
        "set model.decoder.stage.num_classes=3",
    ),
]
if not torch.cuda.is_available():
    BEFORE_START.append((["train.device=cuda"], "train.device=cuda but CUDA is not available; use train.device=cpu"))


@pytest.mark.parametrize("argv, message", BEFORE_START, ids=[" ".join(a) for a, _ in BEFORE_START])
def test_user_error_before_any_process_starts_is_one_line(setup, capsys, argv, message):
    root, config = setup
    argv = [a.format(root=root) for a in argv]
    if "--config-file" not in argv:
        argv = ["--config-file", str(config), *argv]
    status, err = run_command_line(capsys, *argv)
    assert status == 2
    assert err == f"error: {message.format(root=root)}\n"
    assert not (root / "output").exists()  # nothing ran: default_setup would have created it


@pytest.fixture
def run_without_objects(tmp_path):
    """A tiny run in ``tmp_path`` whose 6 training images have no objects."""
    with tiny_run_at(tmp_path, empty=range(6)) as root:
        yield root


def test_user_errors_found_while_running_are_one_line(run_without_objects, tmp_path, capsys):
    config = TINY_CONFIG
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\0" * 16)
    argv = ["--config-file", str(config), "--eval-only", f"train.init_checkpoint={bad}"]
    status, err = run_command_line(capsys, *argv)
    assert status == 2
    assert err.splitlines()[-1].startswith(f"error: cannot read checkpoint {bad}")
    assert "Traceback" not in err
    # every image of the training set is empty (detectron2 asserts "No valid data found")
    status, err = run_command_line(capsys, "--config-file", str(config))
    assert status == 2
    assert err.splitlines()[-1] == (
        f"error: dataset 'tiny_train' ({tmp_path}/data/tiny_train.json) has no annotations: none of the 6 "
        "images has an object (a non-crowd box), and images without objects are left out of training "
        "(filter_empty=True)"
    )
    assert "Traceback" not in err


def test_a_missing_image_read_by_a_data_loading_worker_is_reported_as_itself(tiny_run):
    """torch re-raises an error of a DataLoader worker with the worker's traceback as its message."""
    missing = tiny_run / "data" / "tiny_train" / "002.png"
    missing.unlink()
    with pytest.raises(DatasetError) as info:
        run_main(TINY_CONFIG, "dataloader.train.num_workers=2", "train.max_iter=3")
    assert str(missing) in str(info.value)
    assert "Traceback" not in str(info.value) and "DataLoader worker" not in str(info.value)


def test_a_missing_image_read_by_an_evaluation_worker_is_reported_as_itself(tiny_run):
    missing = tiny_run / "data" / "tiny_val" / "001.png"
    missing.unlink()
    with pytest.raises(DatasetError) as info:
        run_main(TINY_CONFIG, "dataloader.test.num_workers=2", "train.max_iter=1")
    assert str(missing) in str(info.value)
    assert "Traceback" not in str(info.value) and "DataLoader worker" not in str(info.value)


@pytest.mark.parametrize("value", [0, -3])
def test_the_meta_architecture_rejects_no_proposals_with_a_user_error(value):
    with pytest.raises(ConfigValueError, match=f"model.num_proposals must be a positive integer, got {value}") as info:
        tiny_model(num_proposals=value)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


@pytest.mark.slow
def test_import_and_help_show_no_future_warning():
    """detectron2 calls torch.jit.script at import, which PyTorch answers with a FutureWarning each time."""
    env = {**subprocess_env(), "PYTHONWARNINGS": "default"}
    for args in (["-c", "import recursivedet.engine"], ["train_net.py", "--help"]):
        result = run_python(*args, env=env)
        assert result.returncode == 0, result.stderr
        assert "FutureWarning" not in result.stderr, result.stderr
