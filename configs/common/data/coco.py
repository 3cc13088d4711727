"""COCO 2017 with the Sparse R-CNN data recipe: RGB, flip, multi-scale 480-800 (step 32, max 1333),
test 800/1333, 16 images per batch. ``dataloader.train.mapper.augmentations.random_crop=True`` adds the
DETR-style crop (Sparse R-CNN's 300-proposal configs use it). ``dataloader.train.dataset.filter_empty``:
drop (True) or keep images without annotations."""

from detectron2.config import LazyCall as L
from omegaconf import OmegaConf

from recursivedet.data.mapper import DetectionMapper, inference_augmentations, train_augmentations
from recursivedet.engine.loader import TestLoader, TrainLoader, get_dataset_dicts
from recursivedet.evaluation import build_coco_evaluator

dataloader = OmegaConf.create()

dataloader.train = L(TrainLoader)(
    dataset=L(get_dataset_dicts)(names="coco_2017_train", filter_empty=True),
    mapper=L(DetectionMapper)(
        is_train=True,
        augmentations=L(train_augmentations)(
            min_sizes=tuple(range(480, 801, 32)),
            max_size=1333,
            random_crop=False,
            crop_pre_sizes=(400, 500, 600),
            crop_size=(384, 600),
        ),
        image_format="RGB",  # the model's input_format
    ),
    total_batch_size=16,
    seed="${train.seed}",
    num_workers=4,
    aspect_ratio_grouping=True,
)

dataloader.test = L(TestLoader)(
    dataset=L(get_dataset_dicts)(names="coco_2017_val", filter_empty=False),
    mapper=L(DetectionMapper)(
        is_train=False,
        augmentations=L(inference_augmentations)(min_size=800, max_size=1333),
        image_format="${...train.mapper.image_format}",
    ),
    num_workers=4,
)

# writes coco_instances_results.json to the output directory
dataloader.evaluator = L(build_coco_evaluator)(
    dataset_name="${..test.dataset.names}",
    output_dir="${train.output_dir}",
)

# Test-time augmentation (recursivedet/inference/tta.py) for --eval-only and the export, off by default:
# every shortest-edge size below and, with flip, its mirror image; detections merged by weighted box fusion
# ("wbf") or NMS ("nms") at the IoU threshold.
dataloader.tta = dict(
    enabled=False,
    min_sizes=(400, 500, 600, 700, 800, 900, 1000, 1100, 1200),
    max_size=2000,
    flip=True,
    merge="wbf",
    iou_threshold=0.55,
)
