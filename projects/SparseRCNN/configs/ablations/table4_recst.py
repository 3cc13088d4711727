"""Paper Table 4, row 2: RecSt, one set of stage parameters shared by all 6 stages; no RecDy, no PE."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.decoder.stage_sharing = "all"
model.decoder.dynamic_passes = 1
model.decoder.first_stage_dynamic_passes = None
model.decoder.stage.box_pe_self_attention = False
model.decoder.stage.box_pe_dynamic_conv = False
model.decoder.stage.centerness = "none"
