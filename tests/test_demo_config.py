"""The demo config builds the CPU-sized model and trains a step; the demo command checks its arguments before
training and runs end to end on a tiny dataset (the full demo runs in `make demo`)."""

import json
import time

import pytest
import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import make_input, one_thread

from recursivedet import demo
from recursivedet.model_zoo import get_config_file

CONFIG = get_config_file("SparseRCNN/recursivedet_shapes_demo.py")


@pytest.mark.slow
def test_demo_model_is_the_full_paper_model_at_cpu_size():
    cfg = LazyConfig.load(CONFIG)
    d = cfg.model.decoder
    assert (d.stage_sharing, d.dynamic_passes, d.first_stage_dynamic_passes) == ("all_but_first", 2, 1)
    assert d.stage.box_pe_self_attention and d.stage.box_pe_dynamic_conv and d.stage.centerness == "static"
    assert cfg.dataloader.train.dataset.names == "shapes_train" and cfg.dataloader.test.dataset.names == "shapes_val"
    torch.manual_seed(0)
    model = instantiate(cfg.model).train()
    assert model.backbone.output_shape()["p2"].channels == d.stage.dim == 64
    losses = model([make_input(256, 256, [[20, 30, 90, 120]], [2]), make_input(224, 288)])
    sum(losses.values()).backward()
    # The pretrained backbone trains (at a lower lr) except its frozen stem and first stage.
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert any(n.startswith("bottom_up.features.18") for n in trainable)
    assert not any(n.startswith("bottom_up.features.0.") for n in trainable)


def test_demo_refuses_to_delete_a_folder_it_did_not_make(tmp_path, capsys):
    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "important.txt").write_text("data")
    with pytest.raises(SystemExit) as stop:
        demo.main(["--output", str(keep)])
    assert stop.value.code == 2
    assert f"--output {keep}: it exists and was not made by the demo" in capsys.readouterr().err
    assert (keep / "important.txt").read_text() == "data"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--num-drawings", "-1"], "argument --num-drawings: expected an integer >= 0, got -1"),
        (["--num-drawings", "two"], "argument --num-drawings: expected an integer >= 0, got 'two'"),
        (["--vis-threshold", "1.5"], "argument --vis-threshold: expected a score in [0, 1]"),
        (["--vis-threshold", "nan"], "argument --vis-threshold: expected a score in [0, 1]"),
        (["--output", "{file}"], "--output {file} is an existing file, not a folder"),
    ],
)
def test_demo_checks_its_arguments_before_training(tmp_path, capsys, monkeypatch, args, message):
    file = tmp_path / "file.txt"
    file.write_text("")
    monkeypatch.setattr(demo, "do_train", lambda cfg: pytest.fail("the demo trained despite a wrong argument"))
    with pytest.raises(SystemExit) as stop:
        demo.main([a.format(file=file) for a in args])
    assert stop.value.code == 2
    assert message.format(file=file) in capsys.readouterr().err


@pytest.fixture
def tiny_shapes(dataset_name, tmp_path):
    """Names of a 4-image train and a 2-image validation shapes dataset (64 px), in a private cache."""
    from recursivedet.data import ShapesConfig, register_shapes

    names = []
    for num_images, seed in ((4, 0), (2, 1)):
        names.append(dataset_name("demo_shapes"))
        config = ShapesConfig(num_images=num_images, image_size=64, min_size=12, max_size=30, seed=seed)
        register_shapes(names[-1], config, root=tmp_path / "datasets")
    return names


def _tiny_demo(tmp_path, names, *args):
    """The demo's main on a tiny dataset, 2 training iterations at 64 px."""
    overrides = [
        f"dataloader.train.dataset.names={names[0]}",
        f"dataloader.test.dataset.names={names[1]}",
        "dataloader.train.total_batch_size=2",
        "dataloader.train.mapper.augmentations.min_sizes=[64]",
        "dataloader.train.mapper.augmentations.max_size=64",
        "dataloader.test.mapper.augmentations.min_size=64",
        "dataloader.test.mapper.augmentations.max_size=64",
        "train.max_iter=2",
    ]
    with one_thread():
        return demo.main(["--output", str(tmp_path / "demo"), *args, *overrides])


def test_demo_without_drawings_trains_evaluates_and_draws_nothing(tmp_path, tiny_shapes, capsys):
    result = _tiny_demo(tmp_path, tiny_shapes, "--num-drawings", "0")
    assert result["exit_status"] == 0 and result["drawings"] is None
    assert 0 <= result["metrics"]["bbox/AP"] <= 100
    out = capsys.readouterr().out
    assert "drawings:     none (--num-drawings 0)" in out
    assert not (tmp_path / "demo" / "drawings").exists() and (tmp_path / "demo" / "model_final.pth").is_file()
    assert json.loads((tmp_path / "demo" / "coco_instances_results.json").read_text()) is not None


def test_demo_exit_status_is_1_without_an_ap(tmp_path, tiny_shapes, capsys, monkeypatch):
    """An evaluation that yields no AP (here: the evaluator is removed) is a failed demo, not exit 0."""
    train = demo.do_train

    def train_without_evaluator(cfg):
        del cfg.dataloader.evaluator
        return train(cfg)

    monkeypatch.setattr(demo, "do_train", train_without_evaluator)
    result = _tiny_demo(tmp_path, tiny_shapes, "--num-drawings", "1")
    assert result["exit_status"] == 1 and result["metrics"] == {}
    assert f"error: the evaluation on {tiny_shapes[1]} produced no AP" in capsys.readouterr().err
    assert len(list((result["drawings"] / "visualizations").glob("*.png"))) == 1


def test_demo_reruns_over_its_own_folder_but_never_deletes_what_another_command_wrote(tmp_path, tiny_shapes, capsys):
    """The own-data recipe built on the demo's config shares its output_dir: a training run there (here: its
    config.yaml rewritten and a model written, as train_net.py does) must survive the next demo, which stops
    with one line; a folder holding only the demo's files is replaced; an interrupted demo's folder too."""
    folder = tmp_path / "demo"
    assert _tiny_demo(tmp_path, tiny_shapes, "--num-drawings", "0")["exit_status"] == 0
    assert demo.not_only_the_demos(folder) is None
    assert _tiny_demo(tmp_path, tiny_shapes, "--num-drawings", "0")["exit_status"] == 0  # replaces its own run

    (folder / "my_model.pth").write_bytes(b"user model")  # e.g. converted or copied in by the user
    with pytest.raises(SystemExit) as stop:
        _tiny_demo(tmp_path, tiny_shapes, "--num-drawings", "0")
    assert stop.value.code == 2
    assert "files that the demo did not write are in it: my_model.pth" in capsys.readouterr().err
    (folder / "my_model.pth").unlink()

    time.sleep(0.01)
    (folder / "config.yaml").write_text((folder / "config.yaml").read_text())  # another training run's set-up
    (folder / "model_final.pth").write_bytes(b"the user's own trained model")
    with pytest.raises(SystemExit) as stop:
        _tiny_demo(tmp_path, tiny_shapes, "--num-drawings", "0")
    assert "another run wrote into it after the demo (its config.yaml changed)" in capsys.readouterr().err
    assert (folder / "model_final.pth").read_bytes() == b"the user's own trained model"
