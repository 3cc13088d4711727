"""The training set-up of the engine tests (train_net, resume, export, several processes, errors): tiny COCO
datasets, the checked-in tiny configs of ``tests/configs/`` and running ``train_net.py`` on them, in this
process or as a command.

A run of the tiny configs lives in one folder: its datasets in ``data/`` and its output in ``output/``. The
configs find that folder in ``$RECURSIVEDET_TEST_RUN`` (:data:`RUN_ENV`), which :func:`tiny_run_at` sets (for
a test: the ``tiny_run`` fixture of ``conftest.py``).
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
from model_factory import one_thread
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
if str(REPO) not in sys.path:  # train_net.py is a script at the top level
    sys.path.insert(0, str(REPO))

import train_net  # noqa: E402

CONFIGS = TESTS / "configs"
TINY_CONFIG = CONFIGS / "tiny_coco.py"
"""RecursiveDet with a tiny backbone and decoder, 6 CPU iterations on ``tiny_train``, evaluated on ``tiny_val``."""
SYNCBN_CONFIG = CONFIGS / "tiny_coco_resnet18_syncbn.py"
""":data:`TINY_CONFIG` on the project's ResNet-18-FPN with trainable, synchronised batch norm."""
NONFINITE_CONFIG = CONFIGS / "tiny_coco_nonfinite.py"
""":data:`TINY_CONFIG` with a :class:`model_factory.NonFiniteRecursiveDet` (its losses set by overrides)."""

RUN_ENV = "RECURSIVEDET_TEST_RUN"
NUM_CLASSES = 3  # categories of make_coco's datasets (and classes of the tiny configs)
TINY_DATASETS = ("tiny_train", "tiny_val")


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


@contextmanager
def tiny_run_at(folder: Path, empty=()):
    """Make ``folder`` the run of the tiny configs while the context lasts: the datasets ``tiny_train`` (6
    images, those of indices in ``empty`` without objects) and ``tiny_val`` (3 images) written to
    ``folder/data``, ``$RECURSIVEDET_TEST_RUN`` set to ``folder``; the configs write to
    ``folder/output`` (``train.output_dir=...`` elsewhere). Afterwards the variable is as it was and the
    datasets, which the configs register when loaded, are unregistered. Yields ``folder``."""
    make_coco(folder / "data", "tiny_train", 6, empty=empty, seed=0)
    make_coco(folder / "data", "tiny_val", 3, seed=1)
    try:
        with pytest.MonkeyPatch.context() as monkeypatch:
            monkeypatch.setenv(RUN_ENV, str(folder))
            yield folder
    finally:
        forget_tiny_datasets()


def forget_tiny_datasets() -> None:
    """Unregister ``tiny_train`` and ``tiny_val``."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for name in TINY_DATASETS:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)


def run_main(config: Path, *opts: str, resume: bool = False, eval_only: bool = False):
    """``train_net.main`` in this process, as the command line would call it (without the checks that
    ``train_net.run`` makes before starting processes)."""
    argv = ["--config-file", str(config)] + (["--resume"] if resume else []) + (["--eval-only"] if eval_only else [])
    args = train_net.argument_parser().parse_args(argv + list(opts))
    with one_thread():
        return train_net.main(args)


def subprocess_env() -> dict:
    """This environment (with ``$RECURSIVEDET_TEST_RUN``, if set) for a command: one torch thread (the same
    numbers in every process, and no oversubscription of the cores), the checkout and ``tests/`` (the tiny
    configs' models) importable."""
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
    }


def run_python(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: float = 240):
    """``python args...`` (this interpreter) in a subprocess, in ``cwd`` with ``env`` (default:
    :func:`subprocess_env`); returns the ``subprocess.CompletedProcess`` with stdout and stderr as text."""
    cmd = [sys.executable, *args]
    env = subprocess_env() if env is None else env
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def run_cli(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    """``python train_net.py argv...`` in a subprocess (keyword arguments: :func:`run_python`'s)."""
    return run_python(str(REPO / "train_net.py"), *argv, **kwargs)


def loss_history(trainer, key: str = "total_loss") -> dict[int, float]:
    """Per-iteration (unsmoothed) values of a training metric."""
    return {it: v for v, it in trainer.storage.history(key).values()}


def state_dict_of(path: Path) -> dict:
    """The model weights of a checkpoint file."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]
