"""A CPU-sized DiffusionDet on the built-in shapes dataset: the data, optimizer, schedule, backbone and decoder
sizes of the Sparse R-CNN host's demo (``SparseRCNN/recursivedet_shapes_demo.py``: width 64 on the
ImageNet-pretrained MobileNetV2-FPN, 4 stages, zero-initialised box deltas, backbone at 0.1x the head's learning
rate, 900 iterations of 8 images), with 50 noise boxes as proposals and 1 DDIM step.

    python train_net.py --config-file DiffusionDet/diffusiondet_shapes_demo.py
"""

from recursivedet.model_zoo import get_config

from .models.diffusiondet import model

demo = get_config("SparseRCNN/recursivedet_shapes_demo.py")
dataloader, optimizer, lr_multiplier, train = demo.dataloader, demo.optimizer, demo.lr_multiplier, demo.train

model.backbone = demo.model.backbone
for key in ("dim", "num_heads", "ffn_dim", "dynamic_dim", "num_classes"):
    model.decoder.stage[key] = demo.model.decoder.stage[key]
model.decoder.num_stages = demo.model.decoder.num_stages
model.decoder.box_delta_init = demo.model.decoder.box_delta_init
model.time_embedding.dim = 64
model.time_embedding.out_dim = 256
model.num_proposals = 50
train.output_dir = "./output/diffusiondet_shapes_demo"
del demo

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
