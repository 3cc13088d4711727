"""Training data in a reproducible order that survives a restart.

detectron2's ``TrainingSampler`` is an infinite seeded stream consumed by data-loader workers, and its
augmentations draw from each worker's global numpy RNG: after a resume, neither the images nor their
augmentations of iteration i can be recovered without re-running iterations 0..i-1. Here both are a
function of (seed, iteration) only:

* the index stream is one seeded permutation per epoch (``default_rng([seed, epoch])``), cut into global
  batches of ``total_batch_size`` (optionally grouped by aspect ratio, from the dataset dicts' width and
  height); rank r takes its slice of each global batch. Resuming at iteration k replays the index stream
  up to batch k (integers only, no image is read: about a second for 270k COCO iterations);
* every sample carries a seed derived from (seed, its position in the stream); numpy's and python's
  global RNGs are seeded with it while the mapper runs, so augmentations do not depend on which worker
  or process maps the sample, nor on how many workers there are.

The data of iteration i is also the same for any number of processes with the same total batch size.
"""

import difflib
import itertools
import logging
import random
from contextlib import contextmanager

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.build import (
    filter_images_with_only_crowd_annotations,
    print_instances_class_histogram,
    trivial_batch_collator,
)
from detectron2.data.common import DatasetFromList
from detectron2.utils import comm

from recursivedet.data import DatasetError
from recursivedet.errors import ConfigValueError, UserError

from .hooks import derived_seed

logger = logging.getLogger(__name__)


class DatasetNotFoundError(UserError, KeyError):
    """A dataset name that is not registered."""

    def __str__(self):  # KeyError would print the message with quotes
        return str(self.args[0])


def require_registered(names: str | list[str]) -> list[str]:
    """The names as a list; :class:`DatasetNotFoundError` naming the first unregistered one and the
    closest registered names."""
    names = [names] if isinstance(names, str) else list(names)
    registered = DatasetCatalog.list()
    for name in names:
        if name not in registered:
            close = difflib.get_close_matches(name, registered, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else "."
            raise DatasetNotFoundError(
                f"dataset {name!r} is not registered{hint} Register a COCO-format dataset with "
                "recursivedet.data.register_coco_dataset(name, json_file, image_root)."
            )
    return names


def _described(name: str) -> str:
    """``'name'``, with its annotation file when it has one."""
    json_file = MetadataCatalog.get(name).get("json_file")
    return f"{name!r} ({json_file})" if json_file else repr(name)


def get_dataset_dicts(names: str | list[str], filter_empty: bool = True) -> list[dict]:
    """The dataset dicts of the registered datasets ``names``, concatenated, as detectron2's
    ``get_detection_dataset_dicts`` gives them, with errors that name the dataset instead of its assertions:
    :class:`DatasetNotFoundError` for a name that is not registered, :class:`DatasetError` for a dataset
    without images, for datasets whose categories differ, and, with ``filter_empty`` (drop images without
    non-crowd annotations, the training recipe), when no image is left."""
    names = require_registered(names)
    loaded = [DatasetCatalog.get(name) for name in names]
    if any(isinstance(dicts, torchdata.Dataset) for dicts in loaded):  # detectron2 passes datasets on as they are
        return loaded[0] if len(loaded) == 1 else torchdata.ConcatDataset(loaded)
    for name, dicts in zip(names, loaded, strict=True):
        if not len(dicts):
            raise DatasetError(f"dataset {_described(name)} has no images")
    dicts = list(itertools.chain.from_iterable(loaded))
    has_instances = "annotations" in dicts[0]
    if filter_empty and has_instances:
        dicts = filter_images_with_only_crowd_annotations(dicts)
        if not dicts:
            which = ", ".join(_described(name) for name in names)
            subject = f"dataset {which} has" if len(names) == 1 else f"datasets {which} have"
            raise DatasetError(
                f"{subject} no annotations: none of the {sum(len(d) for d in loaded)} images has an object (a "
                "non-crowd box), and images without objects are left out of training (filter_empty=True)"
            )
    classes = {name: MetadataCatalog.get(name).get("thing_classes") for name in names}
    defined = {name: list(c) for name, c in classes.items() if c is not None}
    if len({tuple(c) for c in defined.values()}) > 1:
        listed = "; ".join(f"{name!r} has {len(c)} ({', '.join(c)})" for name, c in defined.items())
        raise DatasetError(f"datasets used together must have the same categories: {listed}")
    if has_instances and defined:
        print_instances_class_histogram(dicts, next(iter(defined.values())))
    return dicts


def dataset_categories(name: str) -> list[str] | None:
    """The category names of the registered dataset ``name`` (its ``thing_classes``), None if it defines
    none. detectron2's COCO registration only sets them when the dataset is loaded: this loads it then."""
    metadata = MetadataCatalog.get(require_registered(name)[0])
    if metadata.get("thing_classes") is None:
        DatasetCatalog.get(name)
    return metadata.get("thing_classes")


def global_batches(groups: list[int], total_batch_size: int, seed: int):
    """Infinite stream of global batches, each a list of (dataset index, position in the index stream).

    Args:
        groups: per dataset item, the group it is batched with (e.g. 0 landscape, 1 portrait); all
            zeros for no grouping.
        total_batch_size: images per iteration over all processes.
        seed: the stream's seed.
    """
    buckets: dict[int, list] = {}
    position = 0
    for epoch in itertools.count():
        for index in np.random.default_rng([seed, epoch]).permutation(len(groups)).tolist():
            bucket = buckets.setdefault(groups[index], [])
            bucket.append((index, position))
            position += 1
            if len(bucket) == total_batch_size:
                yield list(bucket)
                bucket.clear()


@contextmanager
def _seeded_global_rngs(seed: int):
    """Seed numpy's and python's global RNGs (which detectron2's augmentations use), then restore them."""
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class _UserErrorInWorker:
    """A :class:`UserError` raised while a data-loading worker mapped a sample, handed to the training process
    as a sample. torch would re-raise it there with the worker's traceback as its message; the training
    process raises an error of the same class and message instead (see :func:`_raise_worker_errors`)."""

    def __init__(self, error: UserError):
        self.error_type = type(error)
        self.message = str(error)

    def error(self) -> UserError:
        try:
            return self.error_type(self.message)
        except Exception:  # a class whose constructor takes other arguments
            return UserError(self.message)


def _raise_worker_errors(batches):
    """The batches of a data-loader iterator; raises the error of the first :class:`_UserErrorInWorker`."""
    for batch in batches:
        for sample in batch:
            if isinstance(sample, _UserErrorInWorker):
                raise sample.error()
        yield batch


class _UserErrorsAsSamples:
    """``mapper``, returning a :class:`UserError` raised in a data-loading worker as a sample (see
    :class:`_UserErrorInWorker`)."""

    def __init__(self, mapper):
        self.mapper = mapper

    def __call__(self, dataset_dict):
        try:
            return self.mapper(dataset_dict)
        except UserError as e:
            if torchdata.get_worker_info() is None:
                raise
            return _UserErrorInWorker(e)


class TestLoader:
    """detectron2's test loader (one image per batch by default) whose workers' user errors (an unreadable image, a
    size that is not its annotation's) stop evaluation with their own message, as in the main process."""

    def __init__(self, dataset, *, mapper, num_workers: int = 0, **kwargs):
        self.num_workers = num_workers
        mapper = _UserErrorsAsSamples(mapper) if num_workers > 0 else mapper
        self.loader = build_detection_test_loader(dataset=dataset, mapper=mapper, num_workers=num_workers, **kwargs)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        return _raise_worker_errors(self.loader) if self.num_workers > 0 else iter(self.loader)


class _SeededMapDataset(torchdata.Dataset):
    """Maps ``dataset[index]`` with ``mapper`` under a seed derived from (seed, position); items are
    (index, position) pairs from :func:`global_batches`."""

    def __init__(self, dataset, mapper, seed: int):
        self.dataset = dataset
        self.mapper = mapper
        self.seed = seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, item):
        index, position = item
        try:
            with _seeded_global_rngs(derived_seed(self.seed, position)):
                return self.mapper(self.dataset[index])
        except UserError as e:
            if torchdata.get_worker_info() is None:
                raise
            return _UserErrorInWorker(e)


class _RankBatches:
    """This process's batches from iteration ``start_iter`` on: an infinite ``batch_sampler``."""

    def __init__(self, groups, total_batch_size, seed, start_iter, rank, world_size):
        self.args = (groups, total_batch_size, seed)
        self.start_iter = start_iter
        self.size = total_batch_size // world_size
        self.rank = rank

    def __iter__(self):
        stream = global_batches(*self.args)
        for batch in itertools.islice(stream, self.start_iter, None):
            yield batch[self.rank * self.size : (self.rank + 1) * self.size]


class TrainLoader:
    """Infinite training loader (list of mapped dicts per iteration) whose batch of iteration i depends on
    (seed, i) only; see the module docstring. Set :attr:`start_iter` before iterating to resume.

    Args:
        dataset: dataset dicts (see :func:`get_dataset_dicts`).
        mapper: callable mapping a dataset dict to a model input (e.g. ``DetectionMapper``).
        total_batch_size: images per iteration over all processes (divisible by their number).
        seed: data order seed; negative picks a random one (then a resume does not replay the order).
        num_workers: data-loading worker processes per training process.
        aspect_ratio_grouping: batch landscape and portrait images separately (less padding).
    """

    def __init__(
        self,
        dataset: list[dict],
        mapper,
        total_batch_size: int,
        *,
        seed: int = 0,
        num_workers: int = 0,
        aspect_ratio_grouping: bool = True,
    ):
        world_size = comm.get_world_size()
        if total_batch_size <= 0 or total_batch_size % world_size:
            raise ConfigValueError(
                f"dataloader.train.total_batch_size={total_batch_size} must be a positive multiple of the number "
                f"of processes ({world_size})"
            )
        if seed < 0:
            seed = comm.shared_random_seed()
            logger.warning(f"No data seed given (train.seed < 0); using {seed}: a resume will not replay it.")
        if aspect_ratio_grouping and all("width" in d and "height" in d for d in dataset):
            self.groups = [int(d["width"] > d["height"]) for d in dataset]
        else:
            self.groups = [0] * len(dataset)
        self.dataset = _SeededMapDataset(DatasetFromList(dataset, copy=False), mapper, seed)
        self.total_batch_size = total_batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.start_iter = 0

    def __iter__(self):
        batches = _RankBatches(
            self.groups,
            self.total_batch_size,
            self.seed,
            self.start_iter,
            comm.get_rank(),
            comm.get_world_size(),
        )
        loader = torchdata.DataLoader(
            self.dataset,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=trivial_batch_collator,
            # its own generator: creating the iterator must not draw from torch's global RNG, which
            # IterationSeedHook has just seeded for the model (dropout) of the resumed iteration
            generator=torch.Generator().manual_seed(self.seed),
        )
        return _raise_worker_errors(loader) if self.num_workers > 0 else iter(loader)
