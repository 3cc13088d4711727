"""Shared fixtures: a private dataset cache, dataset names that are unregistered after each test, the run
folder of the tiny training configs (``tests/configs/``)."""

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


@pytest.fixture
def tiny_run(tmp_path):
    """``tmp_path``, as the run of the tiny configs (``training_setup.TINY_CONFIG`` and its variants): the
    datasets ``tiny_train`` (6 images) and ``tiny_val`` (3) in ``tmp_path/data``, the output in
    ``tmp_path/output``; the configs register the datasets, which are unregistered after the test."""
    from training_setup import tiny_run_at

    with tiny_run_at(tmp_path) as run:
        yield run


@pytest.fixture(autouse=True)
def restore_logging_handlers():
    """Tests that run a command in this process (train_net, export) let detectron2's ``setup_logger`` attach
    handlers to the stream pytest captured for that test; a later test's log line would then go to a closed
    stream. Put every logger's handlers back as they were."""
    import logging

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    before = {logger: list(logger.handlers) for logger in loggers}
    yield
    for logger in [logging.getLogger()] + [
        lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
    ]:
        logger.handlers[:] = before.get(logger, [])
