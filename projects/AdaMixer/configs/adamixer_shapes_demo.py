"""A CPU-sized AdaMixer on the built-in shapes dataset (as ``SparseRCNN/recursivedet_shapes_demo.py`` for the Sparse
R-CNN host): width 64 on the ImageNet-pretrained MobileNetV2 with the channel-mapping neck, 30 queries, 4 stages,
G = 4 groups of 16 sampled points mixed to 32, backbone at 0.1x the head's learning rate, 900 iterations of 8
images.

    python train_net.py --config-file AdaMixer/adamixer_shapes_demo.py
"""

from detectron2.config import LazyCall as L

from recursivedet.model_zoo import get_config
from recursivedet.modeling.backbone import MobileNetV2Backbone

from .models.adamixer import model

dataloader = get_config("common/data/shapes.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

model.backbone.bottom_up = L(MobileNetV2Backbone)(
    out_features=["res2", "res3", "res4", "res5"], freeze_at=2, norm="FrozenBN", pretrained=True
)
model.backbone.norm_groups = 16
model.backbone.frozen_stages = -1  # the MobileNetV2 freezes its own first stages (freeze_at)
model.decoder.stage.dim = 64
model.decoder.stage.num_heads = 4
model.decoder.stage.ffn_dim = 256
model.decoder.stage.in_points = 16
model.decoder.stage.out_points = 32
model.decoder.stage.num_classes = 4
model.decoder.num_stages = 4
model.num_proposals = 30

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
train.output_dir = "./output/adamixer_shapes_demo"
lr_multiplier.warmup_iters = 20
lr_multiplier.steps = [720, 840]

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
