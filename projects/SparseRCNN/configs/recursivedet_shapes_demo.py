"""A CPU-sized RecursiveDet on the built-in shapes dataset: the full paper model (RecSt-dagger, RecDy,
bb-PE, static cb-PE) at width 64 on an ImageNet-pretrained MobileNetV2-FPN, trained in minutes on 2 CPU
cores (``make demo``; docs/training.md gives the measured times).

Narrow everywhere (FPN width = model width), fewer proposals and stages, zero-initialised box deltas
(identity start), initial boxes on a grid, and the backbone at 0.1x the head's learning rate: a randomly
initialised backbone, or one trained at the head's rate, does not learn in minutes.
"""

from detectron2.config import LazyCall as L

from recursivedet.model_zoo import get_config
from recursivedet.modeling.backbone import build_mobilenet_v2_fpn_backbone

from .models.recursivedet import model

dataloader = get_config("common/data/shapes.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

model.backbone = L(build_mobilenet_v2_fpn_backbone)(
    out_channels="${..decoder.stage.dim}", freeze_at=2, norm="FrozenBN", pretrained=True
)
model.decoder.stage.dim = 64
model.decoder.stage.num_heads = 4
model.decoder.stage.ffn_dim = 256
model.decoder.stage.dynamic_dim = 16
model.decoder.stage.num_classes = 4
model.decoder.num_stages = 4
model.decoder.box_delta_init = "zero"
# Distinct starting boxes (Sparse R-CNN's grid) instead of 30 copies of the whole image, which give the first stage
# nothing to tell the proposals apart by in a short training (docs/training.md, "The demo").
model.proposal_box_init = "grid"
model.num_proposals = 30
model.detections_per_image = 30

dataloader.train.total_batch_size = 8
# Decoding 8 small PNGs takes milliseconds: worker processes would only compete with the 2 compute threads.
dataloader.train.num_workers = 0
dataloader.test.num_workers = 0
optimizer.lr = 1e-3
optimizer.params.lr_factor_func.multiplier = 0.1

train.init_checkpoint = ""  # the backbone loads its ImageNet weights itself
train.device = "cpu"
train.max_iter = 900
train.eval_period = 0
train.checkpointer.period = 300
train.log_period = 20
train.output_dir = "./output/shapes_demo"
lr_multiplier.warmup_iters = 20
lr_multiplier.steps = [720, 840]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
