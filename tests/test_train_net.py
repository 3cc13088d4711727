"""train_net.py end to end on a tiny dataset and model (CPU): training, evaluation, --help, errors."""

import json

import numpy as np
import pytest
import torch
from training_setup import TINY_CONFIG, loss_history, run_main, train_net


def test_training_then_evaluation_write_checkpoints_metrics_and_coco_results(tiny_run, monkeypatch):
    trainer = run_main(TINY_CONFIG)
    out = tiny_run / "output"
    losses = loss_history(trainer)
    assert sorted(losses) == list(range(6)) and all(np.isfinite(list(losses.values())))
    for name in ("model_0000002.pth", "model_0000005.pth", "model_final.pth", "config.yaml", "metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "last_checkpoint").read_text() == "model_final.pth"
    assert any(p.name.startswith("events.out.tfevents") for p in out.iterdir())
    metrics = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    assert {"total_loss", "lr", "loss_cls", "eta_seconds"} <= set().union(*metrics)
    # warmup (2 iterations from 0.01) then x0.1 at iteration 4
    lrs = {m["iteration"]: m["lr"] for m in metrics if "lr" in m}
    assert lrs[0] == pytest.approx(1e-6) and lrs[3] == pytest.approx(1e-4) and lrs[5] == pytest.approx(1e-5)
    # the final evaluation wrote COCO results pycocotools can load, with the dataset's image/category ids
    from pycocotools.coco import COCO

    gt = COCO(str(tiny_run / "data" / "tiny_val.json"))
    dt = gt.loadRes(str(out / "coco_instances_results.json"))
    assert set(dt.getImgIds()) <= {100, 101, 102} and set(dt.getCatIds()) <= {1, 3, 5}
    assert any("bbox/AP" in m for m in metrics)

    results = run_main(TINY_CONFIG, "train.init_checkpoint=" + str(out / "model_final.pth"), eval_only=True)
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}

    # README (paper Fig. 4): the shared decoder evaluated with more stages than its 3 trained ones
    from recursivedet.modeling import RecursiveDecoder

    stages_run = []
    forward = RecursiveDecoder.forward

    def counting_forward(*args, **kwargs):
        outputs = forward(*args, **kwargs)
        stages_run.append(len(outputs))
        return outputs

    monkeypatch.setattr(RecursiveDecoder, "forward", counting_forward)
    deeper = run_main(
        TINY_CONFIG,
        "train.init_checkpoint=" + str(out / "model_final.pth"),
        "model.decoder.inference_stages=5",
        eval_only=True,
    )
    assert set(deeper["bbox"]) >= {"AP", "AP50", "AP75"} and set(stages_run) == {5}


def test_gradient_clipping_and_param_groups(tiny_run, monkeypatch):
    """Clipping bounds the full-model gradient norm; identical hyper-parameters share a param group."""
    from recursivedet.engine import hooks

    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, **kw):
        params = list(params)
        norm = clip(params, max_norm, **kw)
        norms.append(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params])).item())
        return norm

    monkeypatch.setattr(hooks.torch.nn.utils, "clip_grad_norm_", spy)
    trainer = run_main(
        TINY_CONFIG,
        "train.max_iter=2",
        "train.clip_grad.max_norm=0.01",
        "optimizer.params.lr_factor_func.multiplier=0.1",
    )
    assert len(norms) == 2 and all(n <= 0.01 + 1e-6 for n in norms)
    groups = trainer.optimizer.param_groups
    backbone, rest = sorted(g["lr"] for g in groups)  # one group per distinct lr
    assert backbone == pytest.approx(0.1 * rest)
    assert sum(len(g["params"]) for g in groups) == sum(p.requires_grad for p in trainer.model.parameters())


def test_help_lists_the_paper_switches(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_net.invoke_main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for text in ("--config-file", "--eval-only", "--resume", "--num-gpus", "model.decoder.stage_sharing", "RecDy"):
        assert text in out


def test_clipping_under_amp_unscales_first():
    """With a GradScaler, the hook clips the true gradients and the scaler's step does not unscale again."""
    from recursivedet.engine import GradClipHook

    def step(scaler):
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        trainer = type("Trainer", (), {"optimizer": optimizer, "grad_scaler": scaler})()
        hook = GradClipHook(max_norm=0.5)
        hook.trainer = trainer
        loss = model(torch.ones(3, 4)).pow(2).sum() * 10
        (scaler.scale(loss) if scaler else loss).backward()
        hook.after_backward()
        norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
        scaler.step(optimizer) if scaler else optimizer.step()
        return norm, [p.detach().clone() for p in model.parameters()]

    norm, plain = step(None)
    amp_norm, amp = step(torch.amp.GradScaler("cpu", init_scale=2.0**10))
    assert norm == pytest.approx(0.5) and amp_norm == pytest.approx(0.5)
    assert all(torch.allclose(a, b) for a, b in zip(plain, amp, strict=True))


def test_clear_errors_for_missing_dataset_checkpoint_and_image(tiny_run, tmp_path):
    from recursivedet.data import DatasetError
    from recursivedet.engine import CheckpointError, DatasetNotFoundError

    config = TINY_CONFIG
    with pytest.raises(DatasetNotFoundError, match="'tiny_trian' is not registered; did you mean tiny_train"):
        run_main(config, "dataloader.train.dataset.names=tiny_trian")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {bad}"):
        run_main(config, f"train.init_checkpoint={bad}", eval_only=True)
    with pytest.raises(CheckpointError, match="does not exist"):
        run_main(config, f"train.init_checkpoint={tmp_path / 'nothing.pth'}", eval_only=True)
    missing = tmp_path / "data" / "tiny_train" / "002.png"
    missing.unlink()
    with pytest.raises(DatasetError, match=str(missing)):
        run_main(config, "train.max_iter=3")


def test_coco_evaluator_uses_the_fast_implementation_only_with_the_c_extension(tiny_run, tmp_path):
    from detectron2.config import LazyConfig

    from recursivedet.evaluation import build_coco_evaluator

    try:
        from detectron2 import _C  # noqa: F401

        compiled = True
    except ImportError:
        compiled = False
    LazyConfig.load(str(TINY_CONFIG))  # registers tiny_val
    evaluator = build_coco_evaluator("tiny_val", str(tmp_path))
    assert evaluator._use_fast_impl is compiled


def test_a_config_name_runs_from_any_folder(tmp_path, monkeypatch):
    """``--config-file DiffusionDet/diffusiondet_shapes_demo.py`` (a name, as the READMEs write it) from a folder
    where no such file exists: the set-up (which logs the config file and saves config.yaml) finds its file."""
    monkeypatch.chdir(tmp_path)
    name = "DiffusionDet/diffusiondet_shapes_demo.py"
    args = train_net.argument_parser().parse_args(["--config-file", name, f"train.output_dir={tmp_path / 'out'}"])
    cfg = train_net.setup(args)
    assert cfg.model.num_proposals == 50 and (tmp_path / "out" / "config.yaml").is_file()
    assert args.config_file.endswith("DiffusionDet/configs/diffusiondet_shapes_demo.py")
