"""``import recursivedet`` registers the built-in datasets and writes nothing."""

import json
import os
import subprocess
import sys

import pytest

_SCRIPT = """
import json
import recursivedet
from detectron2.data import DatasetCatalog, MetadataCatalog

print(json.dumps({
    name: [name in DatasetCatalog.list(), MetadataCatalog.get(name).json_file, MetadataCatalog.get(name).thing_classes]
    for name in ("shapes_train", "shapes_val")
}))
"""


@pytest.mark.slow
def test_import_registers_builtin_datasets_without_writing(tmp_path):
    cache, home = tmp_path / "cache", tmp_path / "home"
    cache.mkdir()
    home.mkdir()
    env = {**os.environ, "RECURSIVEDET_DATASETS": str(cache), "HOME": str(home), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("shapes_train", "shapes_val"):
        registered, json_file, classes = info[name]
        assert registered and classes == ["rectangle", "circle", "triangle", "ellipse"]
        assert json_file.startswith(str(cache) + os.sep) and json_file.endswith("annotations.json")
    assert info["shapes_train"][1] != info["shapes_val"][1]
    assert list(cache.iterdir()) == []
    assert not (home / ".cache" / "recursivedet").exists()


def test_model_zoo_command_lists_the_names_and_has_usage(capsys):
    from recursivedet import model_zoo

    assert model_zoo.main([]) == 0
    assert "SparseRCNN/recursivedet_shapes_demo.py" in capsys.readouterr().out.splitlines()
    with pytest.raises(SystemExit) as stop:
        model_zoo.main(["--help"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("usage: python -m recursivedet.model_zoo")
