"""A CPU-sized RecursiveDet (DiffusionDet) on the built-in shapes dataset: ``diffusiondet_shapes_demo.py`` with
the RecursiveDet switches of ``models/recursivedet_diffusiondet.py`` (RecSt-dagger, RecDy, bb-PE, static cb-PE).

    python train_net.py --config-file DiffusionDet/recursivedet_diffusiondet_shapes_demo.py
"""

from .diffusiondet_shapes_demo import dataloader, lr_multiplier, model, optimizer, train

model.decoder.stage_sharing = "all_but_first"
model.decoder.dynamic_passes = 2
model.decoder.first_stage_dynamic_passes = 1
model.decoder.stage.box_pe_self_attention = True
model.decoder.stage.box_pe_dynamic_conv = True
model.decoder.stage.centerness = "static"
train.output_dir = "./output/recursivedet_diffusiondet_shapes_demo"

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
