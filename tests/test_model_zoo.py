"""Config names (recursivedet.model_zoo): every host's configs are in its project, the library keeps the shared
parts, and the Sparse R-CNN configs' names from before they moved into their project still load."""

from pathlib import Path

import pytest

from recursivedet.model_zoo import ConfigNotFoundError, config_names, get_config, get_config_file

ROOT = Path(__file__).resolve().parents[1]

# Names that the docs and users' scripts gave before the Sparse R-CNN host became a project, as both spellings.
EARLIER_NAMES = [
    "recursivedet_shapes_demo.py",
    "configs/recursivedet_R50_300pro_3x.py",
    "sparse_rcnn_R50_100pro_3x.py",
    "ablations/table4_recst.py",
    "rego/table2_3_stages.py",
    "finetune/shapes_novel_finetune.py",
    "models/recursivedet.py",
]


def test_the_library_keeps_only_the_shared_config_parts():
    library = sorted(p.relative_to(ROOT / "configs").parts[0] for p in (ROOT / "configs").glob("*"))
    assert library == ["__init__.py", "common"]
    assert not [n for n in config_names() if "/" not in n]  # every complete config is a project's
    projects = {n.split("/")[0] for n in config_names()}
    assert (
        projects
        == {p.parent.name for p in (ROOT / "projects").glob("*/configs")}
        == {
            "AdaMixer",
            "DiffusionDet",
            "SparseRCNN",
        }
    )


@pytest.mark.parametrize("earlier", EARLIER_NAMES)
def test_an_earlier_name_loads_the_config_of_its_project(earlier):
    name = "SparseRCNN/" + earlier.removeprefix("configs/")
    assert get_config_file(earlier) == get_config_file(name) == str(ROOT / "projects/SparseRCNN/configs" / name[11:])


def test_the_earlier_and_the_new_name_build_the_same_config():
    assert get_config("recursivedet_shapes_demo.py") == get_config("SparseRCNN/recursivedet_shapes_demo.py")


def test_a_misspelt_name_is_refused_with_the_closest_names():
    with pytest.raises(ConfigNotFoundError, match=r"did you mean SparseRCNN/recursivedet_shapes_demo\.py"):
        get_config_file("recursivedet_shapes_dem.py")


def test_the_shared_parts_load_by_name():
    assert get_config("common/train.py").train.seed == 42
    assert get_config("common/data/shapes_class_split.py").classes.novel == ["triangle"]


def test_the_moved_detector_class_names_its_new_module():
    with pytest.raises(ImportError, match=r"from recursivedet\.projects\.SparseRCNN\.modeling import RecursiveDet"):
        from recursivedet.modeling import RecursiveDet  # noqa: F401
