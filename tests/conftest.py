"""Shared fixtures: a private dataset cache and dataset names that are unregistered after each test."""

import itertools

import pytest

_counter = itertools.count()


@pytest.fixture
def datasets_root(tmp_path, monkeypatch):
    """Empty (not yet created) cache folder, exported as ``$RECURSIVEDET_DATASETS``."""
    root = tmp_path / "datasets"
    monkeypatch.setenv("RECURSIVEDET_DATASETS", str(root))
    return root


@pytest.fixture
def dataset_name():
    """Factory of unique dataset names; whatever got registered under them is removed afterwards."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = []

    def make(prefix: str = "test_dataset") -> str:
        names.append(f"{prefix}_{next(_counter)}")
        return names[-1]

    yield make
    for name in names:
        DatasetCatalog.pop(name, None)
        MetadataCatalog.pop(name, None)
