"""A CPU-sized RecursiveDet (AdaMixer) on the built-in shapes dataset: ``AdaMixer/adamixer_shapes_demo.py`` with
the RecursiveDet switches of ``models/recursivedet_adamixer.py`` (RecSt, RecDy, bb-PE in self-attention and in
the mixing).

    python train_net.py --config-file AdaMixer/recursivedet_adamixer_shapes_demo.py
"""

from .adamixer_shapes_demo import dataloader, lr_multiplier, model, optimizer, train

model.decoder.stage_sharing = "all"
model.decoder.dynamic_passes = 2
model.decoder.stage.box_pe_self_attention = True
model.decoder.stage.box_pe_dynamic_conv = True
train.output_dir = "./output/recursivedet_adamixer_shapes_demo"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
