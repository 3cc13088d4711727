"""Dataset mapper and augmentations of the Sparse R-CNN recipe.

Training: horizontal flip, then with probability 0.5 (if ``random_crop``) the DETR-style crop (resize the
shortest edge to one of 400/500/600, crop a random size in ``crop_size`` absolute range), then multi-scale
``ResizeShortestEdge`` (480-800 step 32, longest edge <= 1333). Test: shortest edge 800, longest <= 1333.
"""

import copy

import numpy as np
import torch
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T

from recursivedet.data.coco_register import DatasetError, read_image_checked

COCO_TRAIN_MIN_SIZES = tuple(range(480, 801, 32))


def train_augmentations(
    min_sizes: tuple[int, ...] = COCO_TRAIN_MIN_SIZES,
    max_size: int = 1333,
    flip: bool = True,
    random_crop: bool = False,
    crop_pre_sizes: tuple[int, ...] = (400, 500, 600),
    crop_size: tuple[int, int] = (384, 600),
    crop_prob: float = 0.5,
) -> list[T.Augmentation]:
    """Sparse R-CNN training augmentations (see the module docstring)."""
    augs = [T.RandomFlip(horizontal=True)] if flip else []
    if random_crop:
        crop = T.AugmentationList(
            [
                T.ResizeShortestEdge(list(crop_pre_sizes), sample_style="choice"),
                T.RandomCrop("absolute_range", list(crop_size)),
            ]
        )
        augs.append(T.RandomApply(crop, prob=crop_prob))
    augs.append(T.ResizeShortestEdge(list(min_sizes), max_size, sample_style="choice"))
    return augs


def inference_augmentations(min_size: int = 800, max_size: int = 1333) -> list[T.Augmentation]:
    """Single-scale test resize."""
    return [T.ResizeShortestEdge(min_size, max_size)]


def _check_image_size(dataset_dict: dict, image: np.ndarray) -> None:
    """detectron2's ``check_image_size`` (also sets height/width when absent), with a :class:`DatasetError`
    naming the file and both sizes when the annotation's size is not the image's."""
    try:
        utils.check_image_size(dataset_dict, image)
    except utils.SizeMismatchError as e:
        h, w = image.shape[:2]
        raise DatasetError(
            f"image {dataset_dict['file_name']} is {w}x{h} (width x height) but its annotation says "
            f"width={dataset_dict.get('width')!r} height={dataset_dict.get('height')!r}: fix the json's width and "
            "height (images are read turned as their EXIF orientation says)"
        ) from e


class DetectionMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` for boxes: reads images with :func:`read_image_checked` (an
    unreadable image, or one whose size is not its annotation's, raises an error naming its path), applies
    ``augmentations`` and, in training, turns annotations into ``instances`` (``gt_boxes``, ``gt_classes``),
    dropping crowd boxes and boxes left empty by the augmentations (``Boxes.nonempty``); an image without
    annotations gets empty instances.
    Test-time outputs keep the original "height"/"width" so predictions come back in image coordinates.
    """

    def __init__(self, is_train: bool, *, augmentations: list, image_format: str = "RGB"):
        super().__init__(is_train, augmentations=augmentations, image_format=image_format)

    def __call__(self, dataset_dict: dict) -> dict:
        dataset_dict = copy.deepcopy(dataset_dict)
        image = read_image_checked(dataset_dict["file_name"], format=self.image_format)
        _check_image_size(dataset_dict, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            dataset_dict.pop("annotations", None)
            return dataset_dict
        dataset_dict.setdefault("annotations", [])
        self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
