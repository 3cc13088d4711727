"""The built-in ``shapes_train`` / ``shapes_val`` datasets (256x256 images, 4 classes; generated on first
use): the COCO data recipe at a small scale, train shortest edge 224-288, test 256, longest edge <= 512.
Change ``dataloader.train.total_batch_size`` together with the lr (linear rule, see configs/common/optim.py).
"""

from .coco import dataloader

dataloader.train.dataset.names = "shapes_train"
dataloader.train.mapper.augmentations.min_sizes = (224, 256, 288)
dataloader.train.mapper.augmentations.max_size = 512
dataloader.train.mapper.augmentations.crop_pre_sizes = (160, 192, 224)
dataloader.train.mapper.augmentations.crop_size = (128, 224)
dataloader.train.total_batch_size = 8
dataloader.train.num_workers = 2

dataloader.test.dataset.names = "shapes_val"
dataloader.test.mapper.augmentations.min_size = 256
dataloader.test.mapper.augmentations.max_size = 512
dataloader.test.num_workers = 2
dataloader.tta.min_sizes = (224, 256, 288)
dataloader.tta.max_size = 576
