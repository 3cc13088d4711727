"""Paper Table 4, row 4 (and Table 6, row 2, 'Recursive'): RecSt-dagger + RecDy: an independent first stage
(one pass), stages 2..6 shared with two passes; no PE."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.decoder.stage_sharing = "all_but_first"
model.decoder.dynamic_passes = 2
model.decoder.first_stage_dynamic_passes = 1
model.decoder.stage.box_pe_self_attention = False
model.decoder.stage.box_pe_dynamic_conv = False
model.decoder.stage.centerness = "none"
