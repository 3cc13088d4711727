"""A regular (non-editable) install of the package: every config loads by name, from a directory that is not
the checkout, and its model runs a forward pass; the projects are importable from the installed package."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Runs in the installed copy only (PYTHONPATH = the install target, working directory elsewhere).
CHECK_EVERY_CONFIG = """
import sys
import torch
from detectron2.config import instantiate

import recursivedet
from recursivedet import model_zoo

target = sys.argv[1]
assert recursivedet.__file__.startswith(target), recursivedet.__file__
import recursivedet.projects.SparseRCNN.convert  # noqa: F401  (a project's module, from the install)

names = model_zoo.config_names()
assert "SparseRCNN/recursivedet_R50_300pro_3x.py" in names and "SparseRCNN/rego/table2_3_stages.py" in names, names
torch.manual_seed(0)
for name in names:
    assert model_zoo.get_config_file(name).startswith(target), name
    cfg = model_zoo.get_config(name)
    model = instantiate(cfg.model).eval()
    with torch.no_grad():
        (out,) = model([{"image": torch.zeros(3, 64, 96, dtype=torch.uint8)}])
    assert out["instances"].image_size == (64, 96), name
print(len(names), "configs")
"""


@pytest.mark.slow
def test_regular_install_loads_every_config_by_name_from_another_directory(tmp_path):
    target = tmp_path / "site-packages"
    # From a copy: setuptools builds in the source's build/, whose files of an earlier layout it would install.
    source = tmp_path / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(".*", "build", "output", "datasets", "*.egg-info"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target)]
        + ["--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    assert (target / "recursivedet" / "projects" / "SparseRCNN" / "configs" / "recursivedet_R50_300pro_3x.py").is_file()
    assert (target / "recursivedet" / "projects" / "SparseRCNN" / "convert.py").is_file()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "OMP_NUM_THREADS": "2"}
    env["RECURSIVEDET_DATASETS"] = str(tmp_path / "datasets")  # importing registers datasets, writes nothing
    run = subprocess.run(
        [sys.executable, "-c", CHECK_EVERY_CONFIG, str(target)],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stderr[-5000:]
    assert int(run.stdout.split()[0]) >= 25
