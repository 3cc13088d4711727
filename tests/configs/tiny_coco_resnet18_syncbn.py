"""The tiny config (tiny_coco.py) on the project's ResNet-FPN at depth 18 with trainable, synchronised batch
norm: what several processes have to keep in step."""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import ResNet

from recursivedet.model_zoo import get_config

from .tiny_coco import dataloader, lr_multiplier, model, optimizer, train

model.backbone = get_config("SparseRCNN/models/recursivedet.py").model.backbone
model.backbone.bottom_up.stages = L(ResNet.make_default_stages)(depth=18, norm="SyncBN")
model.backbone.bottom_up.stem.norm = "SyncBN"
model.backbone.bottom_up.freeze_at = 0

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
