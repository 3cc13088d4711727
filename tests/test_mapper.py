"""Data: the mapper's augmentations keep boxes on their objects and inside the image, empty images are kept
or dropped, unreadable images are named; the training loader's order is reproducible."""

import itertools

import cv2
import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import transforms as T
from detectron2.structures import BoxMode
from PIL import Image
from training_setup import make_coco

from recursivedet.data import DatasetError, register_coco_dataset
from recursivedet.data.mapper import DetectionMapper, inference_augmentations, train_augmentations
from recursivedet.engine.loader import TrainLoader, _RankBatches, get_dataset_dicts, global_batches

BOXES = [[0, 0, 30, 20], [70, 50, 120, 80], [100, 0, 120, 15]]  # XYXY, two touching the border


@pytest.fixture
def sample(tmp_path):
    """A 120x80 image, black with white boxes (a thin border of each box left black), and its dict."""
    image = np.zeros((80, 120, 3), dtype=np.uint8)
    for x0, y0, x1, y1 in BOXES:
        image[y0:y1, x0:x1] = 255
    path = tmp_path / "image.png"
    Image.fromarray(image).save(path)
    annotations = [
        {"bbox": b, "bbox_mode": BoxMode.XYXY_ABS, "category_id": i, "iscrowd": 0} for i, b in enumerate(BOXES)
    ]
    return {"file_name": str(path), "height": 80, "width": 120, "image_id": 1, "annotations": annotations}


def _np_seeded(seed, mapper, d):
    np.random.seed(seed)
    return mapper(d)


def test_augmented_boxes_stay_inside_the_image_and_on_their_objects(sample):
    augs = train_augmentations(
        min_sizes=(48, 64, 96), max_size=160, random_crop=True, crop_pre_sizes=(60, 80), crop_size=(30, 70)
    )
    mapper = DetectionMapper(True, augmentations=augs, image_format="RGB")
    sizes, counts = set(), set()
    for seed in range(60):
        out = _np_seeded(seed, mapper, sample)
        image, inst = out["image"], out["instances"]
        h, w = image.shape[1:]
        assert inst.image_size == (h, w)
        assert min(h, w) in (48, 64, 96) or max(h, w) == 160
        boxes = inst.gt_boxes.tensor
        assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
        assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
        assert inst.gt_boxes.nonempty().all()  # degenerate boxes were dropped
        for x0, y0, x1, y1 in boxes.round().int().tolist():
            if x1 - x0 > 4 and y1 - y0 > 4:  # the box still covers its (white) object
                assert image[:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2].float().mean() > 200
        sizes.add((h, w))
        counts.add(len(inst))
    assert len(sizes) > 3 and len(counts) > 1  # multi-scale, and crops removed boxes


def test_boxes_cut_away_are_removed(sample):
    mapper = DetectionMapper(True, augmentations=[T.CropTransform(0, 0, 60, 40)], image_format="RGB")
    out = mapper(sample)
    assert out["instances"].gt_boxes.tensor.tolist() == [[0, 0, 30, 20]]
    assert out["instances"].gt_classes.tolist() == [0]


def test_rgb_input_and_test_time_resize_keep_the_original_size(sample):
    image = np.zeros((80, 120, 3), dtype=np.uint8)
    image[..., 0] = 200  # red
    Image.fromarray(image).save(sample["file_name"])
    out = DetectionMapper(False, augmentations=inference_augmentations(40, 100), image_format="RGB")(sample)
    assert out["image"].shape == (3, 40, 60) and out["image"][0].min() == 200 and out["image"][1:].max() == 0
    assert (out["height"], out["width"]) == (80, 120) and "instances" not in out
    no_size = {"file_name": sample["file_name"], "image_id": 7}  # a folder image: sizes from the file
    out = DetectionMapper(False, augmentations=inference_augmentations(40, 100))(no_size)
    assert (out["height"], out["width"]) == (80, 120)


def test_image_without_annotations_gets_empty_instances(sample):
    del sample["annotations"]
    out = DetectionMapper(True, augmentations=train_augmentations((64,), 160))(sample)
    assert len(out["instances"]) == 0 and out["instances"].gt_boxes.tensor.shape == (0, 4)


def test_missing_or_corrupt_image_names_the_path(sample, tmp_path):
    mapper = DetectionMapper(True, augmentations=train_augmentations((64,), 160))
    missing = dict(sample, file_name=str(tmp_path / "gone.png"))
    with pytest.raises(DatasetError, match=f"{tmp_path / 'gone.png'}"):
        mapper(missing)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DatasetError, match=f"{tmp_path / 'broken.png'}"):
        mapper(dict(sample, file_name=str(tmp_path / "broken.png")))


@pytest.fixture
def with_empty(tmp_path):
    """A registered dataset of 6 images, 2 of them without objects."""
    json_file, image_dir = make_coco(tmp_path, "mapper_empty", 6, empty=(1, 4))
    name = "mapper_test_with_empty"
    register_coco_dataset(name, json_file, image_dir)
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def test_empty_images_are_dropped_or_kept(with_empty):
    assert len(get_dataset_dicts(with_empty, filter_empty=True)) == 4
    kept = get_dataset_dicts(with_empty, filter_empty=False)
    assert len(kept) == 6
    loader = TrainLoader(kept, DetectionMapper(True, augmentations=train_augmentations((64,), 96)), 3, seed=0)
    batches = list(itertools.islice(loader, 4))  # two epochs: every image twice
    counts = {}
    for x in itertools.chain(*batches):
        counts.setdefault(x["image_id"], set()).add(len(x["instances"]))
    assert sorted(counts) == list(range(100, 106)) and counts[101] == counts[104] == {0}


def test_data_order_depends_on_seed_and_iteration_only():
    groups = [0, 1, 0, 0, 1, 1, 0, 1, 0, 0]
    stream = list(itertools.islice(global_batches(groups, 4, seed=3), 12))
    assert all(len({groups[i] for i, _ in b}) == 1 for b in stream)  # aspect-ratio groups
    positions = [p for b in stream for _, p in b]
    assert len(set(positions)) == len(positions)  # each draw has its own augmentation seed
    assert stream != list(itertools.islice(global_batches(groups, 4, seed=4), 12))
    # resuming at iteration 5, and splitting each global batch over two processes, give the same data
    resumed = list(itertools.islice(_RankBatches(groups, 4, 3, 5, rank=0, world_size=1), 7))
    assert resumed == stream[5:]
    ranks = [list(itertools.islice(_RankBatches(groups, 4, 3, 5, rank=r, world_size=2), 7)) for r in (0, 1)]
    assert [a + b for a, b in zip(*ranks, strict=True)] == stream[5:]


def test_loader_output_is_independent_of_workers_and_resumes(with_empty):
    dicts = get_dataset_dicts(with_empty, filter_empty=False)
    augs = train_augmentations((48, 64, 80), 120, random_crop=True, crop_pre_sizes=(60,), crop_size=(30, 50))

    def take(num_workers, start_iter, n):
        loader = TrainLoader(dicts, DetectionMapper(True, augmentations=augs), 2, seed=1, num_workers=num_workers)
        loader.start_iter = start_iter
        batches = itertools.islice(loader, n)
        return [(x["image_id"], x["image"], x["instances"].gt_boxes.tensor) for x in itertools.chain(*batches)]

    straight = take(0, 0, 5)
    for got, expected in zip(take(2, 2, 3), straight[4:], strict=True):  # 2 workers, from iteration 2
        assert got[0] == expected[0] and torch.equal(got[1], expected[1]) and torch.equal(got[2], expected[2])


def test_16bit_image_reaches_the_model_scaled_not_white(sample, tmp_path):
    """A 16-bit PNG (written by OpenCV) arrives as the 8-bit image it shows: value v as round(v / 257)."""
    grey = np.zeros((80, 120), np.uint16)
    grey[:, :60] = 257 * 100 + 100  # -> 100
    grey[:, 60:] = 65535  # -> 255
    path = tmp_path / "grey16.png"
    assert cv2.imwrite(str(path), grey)
    out = DetectionMapper(False, augmentations=[])(dict(sample, file_name=str(path)))
    assert out["image"].dtype == torch.uint8 and out["image"].shape == (3, 80, 120)
    assert (out["image"][:, :, :60] == 100).all() and (out["image"][:, :, 60:] == 255).all()


def test_annotation_size_differs_from_the_image(sample):
    mapper = DetectionMapper(True, augmentations=train_augmentations((64,), 160))
    with pytest.raises(DatasetError) as info:
        mapper(dict(sample, width=80, height=120))
    assert str(info.value) == (
        f"image {sample['file_name']} is 120x80 (width x height) but its annotation says width=80 height=120: "
        "fix the json's width and height (images are read turned as their EXIF orientation says)"
    )
