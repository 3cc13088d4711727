"""A CPU-sized DiffusionDet on the built-in shapes dataset (as ``configs/recursivedet_shapes_demo.py`` for the
Sparse R-CNN host): width 64 on the ImageNet-pretrained MobileNetV2-FPN, 50 proposals, 4 stages, zero-initialised
box deltas, backbone at 0.1x the head's learning rate, 900 iterations of 8 images, 1 DDIM step.

    python train_net.py --config-file DiffusionDet/diffusiondet_shapes_demo.py
"""

from detectron2.config import LazyCall as L

from recursivedet.model_zoo import get_config
from recursivedet.modeling.backbone import build_mobilenet_v2_fpn_backbone

from .models.diffusiondet import model

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
model.time_embedding.dim = 64
model.time_embedding.out_dim = 256
model.num_proposals = 50

dataloader.train.total_batch_size = 8
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
train.output_dir = "./output/diffusiondet_shapes_demo"
lr_multiplier.warmup_iters = 20
lr_multiplier.steps = [720, 840]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
