"""RecursiveDet (Sparse R-CNN host), Swin-B-FPN, 300 proposals, 3x schedule, random crop
(paper Table 2: 118M, 53.1 AP).

The backbone is the official code's Swin detection backbone (``recursivedet/modeling/backbone/swin.py``):
timm's Swin-B with a LayerNorm on each output, nothing frozen, into detectron2's FPN (p2-p5, max-pooled p6).
``train.init_checkpoint`` names its ImageNet weights (ImageNet-22k, as Swin's own Swin-B detection configs): the
file swin_base_patch4_window7_224_22k.pth of Microsoft's Swin release, which loads into the backbone (timm's weights
of the model too). Download it where you can and give its path:
``train.init_checkpoint=/path/to/swin_base_patch4_window7_224_22k.pth``.
"""

from detectron2.config import LazyCall as L

from recursivedet.modeling.backbone.swin import SwinBackbone

from .recursivedet_R50_300pro_3x import dataloader, lr_multiplier, model, optimizer, train

model.backbone.bottom_up = L(SwinBackbone)(size="B", out_indices=(0, 1, 2, 3))
model.backbone.in_features = ["res2", "res3", "res4", "res5"]
train.init_checkpoint = "swin_base_patch4_window7_224_22k.pth"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
