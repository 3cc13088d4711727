"""Paper Table 6, row 3: bb-PE (self-attention and dynamic conv) on Sparse R-CNN's independent stages."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.decoder.stage_sharing = "none"
model.decoder.dynamic_passes = 1
model.decoder.first_stage_dynamic_passes = None
model.decoder.stage.centerness = "none"
