"""train_net.py end to end on a tiny dataset and model (CPU): training, evaluation, --help, errors.

The helpers at the top (tiny COCO data, tiny config file, running train_net) are shared by the other
engine tests (test_resume, test_distributed, test_export, test_config_overrides).
"""

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # train_net.py is a script at the top level
    sys.path.insert(0, str(REPO))

import train_net  # noqa: E402

NUM_CLASSES = 3


def make_coco(root: Path, name: str, num_images: int = 6, size=(64, 64), empty=(), seed: int = 0):
    """Write ``num_images`` PNGs with 1-2 filled rectangles each (none for indices in ``empty``) and their
    COCO json (category ids 1, 3, 5: not contiguous, to test the id mapping). Returns (json, image dir)."""
    rng = np.random.default_rng(seed)
    image_dir = root / name
    image_dir.mkdir(parents=True, exist_ok=True)
    h, w = size
    coco = {"images": [], "annotations": [], "categories": [{"id": 2 * k + 1, "name": f"c{k}"} for k in range(3)]}
    for i in range(num_images):
        image = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        file_name = f"{i:03d}.png"
        coco["images"].append({"id": 100 + i, "file_name": file_name, "width": w, "height": h})
        for _ in range(0 if i in empty else int(rng.integers(1, 3))):
            bw, bh = int(rng.integers(w // 4, w // 2)), int(rng.integers(h // 4, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            k = int(rng.integers(0, NUM_CLASSES))
            image[y : y + bh, x : x + bw] = 80 * (k + 1)
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": 100 + i,
                    "category_id": 2 * k + 1,
                    "bbox": [x, y, bw, bh],
                    "area": bw * bh,
                    "iscrowd": 0,
                }
            )
        Image.fromarray(image).save(image_dir / file_name)
    json_file = root / f"{name}.json"
    json_file.write_text(json.dumps(coco))
    return json_file, image_dir


CONFIG_TEMPLATE = '''"""Tiny CPU config: the project's common configs with a small backbone and decoder."""
import sys

sys.path.insert(0, {tests!r})

from detectron2.config import LazyCall as L
from detectron2.config import LazyConfig
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling.backbone import ResNet
from model_factory import TinyBackbone

from recursivedet.data import register_coco_dataset

for _name, _json, _root in {datasets!r}:
    if _name in DatasetCatalog.list():  # tests reuse names with new files
        DatasetCatalog.remove(_name)
        MetadataCatalog.remove(_name)
    register_coco_dataset(_name, _json, _root)

_common = {common!r}
train = LazyConfig.load(_common + "/train.py").train
optimizer = LazyConfig.load(_common + "/optim.py").optimizer
lr_multiplier = LazyConfig.load(_common + "/schedule.py").lr_multiplier
dataloader = LazyConfig.load(_common + "/data/shapes.py").dataloader
model = LazyConfig.load({models!r} + "/recursivedet.py").model

{backbone}
model.decoder.stage.update(dim=32, num_heads=4, ffn_dim=64, dynamic_dim=8, num_classes={num_classes})
model.decoder.num_stages = 3
model.num_proposals = 8

dataloader.train.dataset.names = "{train_name}"
dataloader.train.mapper.augmentations.min_sizes = (56, 64, 72)
dataloader.train.mapper.augmentations.max_size = 96
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "{val_name}"
dataloader.test.mapper.augmentations.min_size = 64
dataloader.test.mapper.augmentations.max_size = 96
dataloader.test.num_workers = 0

train.output_dir = {output_dir!r}
train.init_checkpoint = ""
train.max_iter = 6
train.checkpointer.period = 3
train.eval_period = 0
train.log_period = 1
train.device = "cpu"
optimizer.lr = 1e-4
lr_multiplier.warmup_iters = 2
lr_multiplier.steps = [4]
'''


BACKBONES = {
    "tiny": "model.backbone = L(TinyBackbone)(channels=32)",
    # the project's ResNet-FPN at depth 18 with trainable, synchronised batch norm
    "resnet18_syncbn": """
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="SyncBN")
model.backbone.bottom_up.stem.norm = "SyncBN"
model.backbone.bottom_up.freeze_at = 0""",
}


def make_setup(tmp_path: Path, tag: str = "tiny", num_train: int = 6, num_val: int = 3, empty=(), backbone="tiny"):
    """A tiny dataset pair (registered as ``{tag}_train``/``{tag}_val`` by the config) and a config file
    writing to ``tmp_path/output``, with a backbone of :data:`BACKBONES`. Returns the config path."""
    data = tmp_path / "data"
    train_json, train_dir = make_coco(data, f"{tag}_train", num_train, empty=empty, seed=0)
    val_json, val_dir = make_coco(data, f"{tag}_val", num_val, seed=1)
    config = tmp_path / f"{tag}_config.py"
    config.write_text(
        CONFIG_TEMPLATE.format(
            tests=str(TESTS),
            common=str(REPO / "configs" / "common"),
            models=str(REPO / "configs" / "models"),
            datasets=[(f"{tag}_train", str(train_json), str(train_dir)), (f"{tag}_val", str(val_json), str(val_dir))],
            num_classes=NUM_CLASSES,
            train_name=f"{tag}_train",
            val_name=f"{tag}_val",
            output_dir=str(tmp_path / "output"),
            backbone=BACKBONES[backbone],
        )
    )
    return config


@contextmanager
def one_thread():
    """Tiny models only lose time to thread synchronisation, more so when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def run_main(config: Path, *opts: str, resume: bool = False, eval_only: bool = False):
    """``train_net.main`` in this process, as the command line would call it."""
    argv = ["--config-file", str(config)] + (["--resume"] if resume else []) + (["--eval-only"] if eval_only else [])
    args = train_net.argument_parser().parse_args(argv + list(opts))
    with one_thread():
        return train_net.main(args)


def run_cli(*argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python train_net.py argv...`` in a subprocess."""
    cmd = [sys.executable, str(REPO / "train_net.py"), *argv]
    return subprocess.run(cmd, cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=timeout)


def subprocess_env() -> dict:
    """One torch thread: the same numbers in every process, and no oversubscription of the cores."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def loss_history(trainer, key: str = "total_loss") -> dict[int, float]:
    """Per-iteration (unsmoothed) values of a training metric."""
    return {it: v for v, it in trainer.storage.history(key).values()}


def state_dict_of(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


# ---- tests --------------------------------------------------------------------------------------------------


def test_training_then_evaluation_write_checkpoints_metrics_and_coco_results(tmp_path):
    config = make_setup(tmp_path)
    trainer = run_main(config)
    out = tmp_path / "output"
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

    gt = COCO(str(tmp_path / "data" / "tiny_val.json"))
    dt = gt.loadRes(str(out / "coco_instances_results.json"))
    assert set(dt.getImgIds()) <= {100, 101, 102} and set(dt.getCatIds()) <= {1, 3, 5}
    assert any("bbox/AP" in m for m in metrics)

    results = run_main(config, "train.init_checkpoint=" + str(out / "model_final.pth"), eval_only=True)
    assert set(results["bbox"]) >= {"AP", "AP50", "AP75"}


def test_gradient_clipping_and_param_groups(tmp_path, monkeypatch):
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
    config = make_setup(tmp_path)
    trainer = run_main(
        config, "train.max_iter=2", "train.clip_grad.max_norm=0.01", "optimizer.params.lr_factor_func.multiplier=0.1"
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


def test_clear_errors_for_missing_dataset_checkpoint_and_image(tmp_path):
    from recursivedet.data import DatasetError
    from recursivedet.engine import CheckpointError, DatasetNotFoundError

    config = make_setup(tmp_path)
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


def test_coco_evaluator_uses_the_fast_implementation_only_with_the_c_extension(tmp_path):
    from detectron2.config import LazyConfig

    from recursivedet.evaluation import build_coco_evaluator

    try:
        from detectron2 import _C  # noqa: F401

        compiled = True
    except ImportError:
        compiled = False
    LazyConfig.load(str(make_setup(tmp_path, tag="evaluator")))  # registers evaluator_val
    evaluator = build_coco_evaluator("evaluator_val", str(tmp_path))
    assert evaluator._use_fast_impl is compiled
