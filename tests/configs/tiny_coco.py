"""The engine tests' training config: RecursiveDet (SparseRCNN/models/recursivedet.py, every paper switch as
there) on a tiny backbone (``model_factory.TinyBackbone``) with a narrow 3-stage decoder and 8 proposals, the
project's common train/optimizer/schedule/data configs shrunk to 6 CPU iterations at 56-96 px: a run takes
a few seconds.

The run's folder is ``$RECURSIVEDET_TEST_RUN``: the datasets ``tiny_train`` and ``tiny_val`` (3 categories)
are ``data/tiny_train.json`` with its images in ``data/tiny_train/`` and the same for ``tiny_val``
(``training_setup.tiny_run_at`` writes them), and the output goes to ``output/``. For example

    RECURSIVEDET_TEST_RUN=/tmp/run PYTHONPATH=tests python train_net.py --config-file tests/configs/tiny_coco.py
"""

import os

from detectron2.config import LazyCall as L
from detectron2.data import DatasetCatalog, MetadataCatalog
from model_factory import TinyBackbone

from recursivedet.data import register_coco_dataset
from recursivedet.model_zoo import get_config

if not os.environ.get("RECURSIVEDET_TEST_RUN"):
    raise RuntimeError("set $RECURSIVEDET_TEST_RUN to the run's folder (its datasets in data/, output in output/)")
_run = os.environ["RECURSIVEDET_TEST_RUN"]

for _name in ("tiny_train", "tiny_val"):
    if _name in DatasetCatalog.list():  # registered by an earlier test, with the files of its own run
        DatasetCatalog.remove(_name)
        MetadataCatalog.remove(_name)
    register_coco_dataset(_name, os.path.join(_run, "data", f"{_name}.json"), os.path.join(_run, "data", _name))

train = get_config("common/train.py").train
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
dataloader = get_config("common/data/shapes.py").dataloader
model = get_config("SparseRCNN/models/recursivedet.py").model

model.backbone = L(TinyBackbone)(channels=32)
model.decoder.stage.update(dim=32, num_heads=4, ffn_dim=64, dynamic_dim=8, num_classes=3)
model.decoder.num_stages = 3
model.num_proposals = 8

dataloader.train.dataset.names = "tiny_train"
dataloader.train.mapper.augmentations.min_sizes = (56, 64, 72)
dataloader.train.mapper.augmentations.max_size = 96
dataloader.train.total_batch_size = 4
dataloader.train.num_workers = 0
dataloader.test.dataset.names = "tiny_val"
dataloader.test.mapper.augmentations.min_size = 64
dataloader.test.mapper.augmentations.max_size = 96
dataloader.test.num_workers = 0

train.output_dir = os.path.join(_run, "output")
train.init_checkpoint = ""
train.max_iter = 6
train.checkpointer.period = 3
train.eval_period = 0
train.log_period = 1
train.device = "cpu"
optimizer.lr = 1e-4
lr_multiplier.warmup_iters = 2
lr_multiplier.steps = [4]
