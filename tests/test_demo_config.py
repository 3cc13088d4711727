"""The demo config builds the CPU-sized model and trains a step (the full demo runs in `make demo`)."""

from pathlib import Path

import torch
from detectron2.config import LazyConfig, instantiate
from model_factory import make_input

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "recursivedet_shapes_demo.py"


def test_demo_model_is_the_full_paper_model_at_cpu_size():
    cfg = LazyConfig.load(str(CONFIG))
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


def test_demo_refuses_to_delete_a_folder_it_did_not_make(tmp_path):
    import pytest

    from recursivedet.demo import main

    keep = tmp_path / "mine"
    keep.mkdir()
    (keep / "important.txt").write_text("data")
    with pytest.raises(SystemExit):
        main(["--output", str(keep)])
    assert (keep / "important.txt").read_text() == "data"
