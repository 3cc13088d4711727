"""Sparse R-CNN, Swin-T-FPN, 300 proposals, 3x schedule, random crop
(paper Table 2: 110M, 47.9 AP).

The backbone is the official code's Swin detection backbone (``recursivedet/modeling/backbone/swin.py``):
timm's Swin-T with a LayerNorm on each output, nothing frozen, into detectron2's FPN (p2-p5, max-pooled p6).
``train.init_checkpoint`` names its ImageNet weights (ImageNet-1k, as the official config, whose MODEL.WEIGHTS is
this file converted): the file swin_tiny_patch4_window7_224.pth of Microsoft's Swin release, which loads into the
backbone (timm's weights of the model too). Download it where you can and give its path:
``train.init_checkpoint=/path/to/swin_tiny_patch4_window7_224.pth``.
"""

from detectron2.config import LazyCall as L

from recursivedet.modeling.backbone.swin import SwinBackbone

from .sparse_rcnn_R50_300pro_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(SwinBackbone)(size="T", out_indices=(0, 1, 2, 3))
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
train.init_checkpoint = "swin_tiny_patch4_window7_224.pth"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
