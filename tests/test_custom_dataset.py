"""The documented recipe for users' own COCO data, followed to the letter: a config file that registers the
datasets and starts from the demo config, trained and then evaluated with ``train_net.py``."""

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from training_setup import REPO, run_cli


def readme_own_data_config() -> str:
    """The python block of docs/training.md's "Your own data", as a user copies it into ``my_config.py``."""
    section = (REPO / "docs" / "training.md").read_text().split("### Your own data", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


# A CPU run of seconds: small inputs and batches (the model is the demo's).
SHRINK = [
    "train.max_iter=2",
    "dataloader.train.total_batch_size=2",
    "dataloader.train.mapper.augmentations.min_sizes=[64]",
    "dataloader.train.mapper.augmentations.max_size=96",
    "dataloader.test.mapper.augmentations.min_size=64",
    "dataloader.test.mapper.augmentations.max_size=96",
]


def write_coco(root: Path, name: str, num_images: int, seed: int, area_and_iscrowd: bool = True) -> tuple[Path, Path]:
    """``num_images`` 64x48 PNGs with a drawn square (class "square") and disc (class "disc") each, and their
    COCO json (``root/<name>.json``, images in ``root/<name>_images``), with or without the ``area`` and
    ``iscrowd`` fields that many exporters leave out. Returns (json file, image folder)."""
    rng = np.random.default_rng(seed)
    images_dir = root / f"{name}_images"
    images_dir.mkdir(parents=True)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}]}
    for i in range(num_images):
        image = np.full((48, 64, 3), 30, np.uint8)
        x, y = (int(v) for v in rng.integers(2, 20, 2))
        cv2.rectangle(image, (x, y), (x + 15, y + 15), (255, 255, 255), thickness=-1)
        cx, cy = int(rng.integers(42, 54)), int(rng.integers(10, 38))
        cv2.circle(image, (cx, cy), 8, (0, 0, 255), thickness=-1)
        file_name = f"img_{i}.png"
        cv2.imwrite(str(images_dir / file_name), image)
        coco["images"].append({"id": i + 1, "file_name": file_name, "width": 64, "height": 48})
        for category_id, box in ((1, [x, y, 16, 16]), (2, [cx - 8, cy - 8, 17, 17])):
            coco["annotations"].append(
                {
                    "id": len(coco["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": category_id,
                    "bbox": box,
                }
                | ({"area": box[2] * box[3], "iscrowd": 0} if area_and_iscrowd else {})
            )
    json_file = root / f"{name}.json"
    json_file.write_text(json.dumps(coco))
    return json_file, images_dir


@pytest.mark.slow
def test_readme_recipe_for_own_coco_data_trains_and_evaluates(tmp_path):
    # The README's paths are relative to the working directory: the user's project folder.
    write_coco(tmp_path / "data", "train", 4, seed=0)
    write_coco(tmp_path / "data", "val", 2, seed=1, area_and_iscrowd=False)
    config = tmp_path / "my_config.py"
    config.write_text(readme_own_data_config())
    output = tmp_path / "output" / "my_data"  # the recipe's own folder, relative to where it runs
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "RECURSIVEDET_DATASETS": str(tmp_path / "datasets"),  # the built-in shapes are registered, not written
    }

    trained = run_cli("--config-file", str(config), *SHRINK, cwd=tmp_path, env=env)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "already registered" not in trained.stderr
    assert (output / "model_final.pth").is_file()

    evaluated = run_cli(
        "--config-file",
        str(config),
        "--eval-only",
        *SHRINK[2:],
        f"train.init_checkpoint={output / 'model_final.pth'}",
        cwd=tmp_path,
        env=env,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    results = json.loads((output / "coco_instances_results.json").read_text())
    assert {r["image_id"] for r in results} <= {1, 2} and {r["category_id"] for r in results} <= {1, 2}
    assert "copypaste: AP,AP50,AP75" in evaluated.stdout + evaluated.stderr
