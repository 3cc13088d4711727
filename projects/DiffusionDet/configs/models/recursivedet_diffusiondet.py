"""RecursiveDet on the DiffusionDet host (paper Table 2): RecSt-dagger (stage 1 independent, stages 2..6 share
one set of parameters, each set with its own time modulation), RecDy (two dynamic-conv passes in the shared
stages, one in the first), bounding-box PE in self-attention and dynamic conv, static centerness PE.
DiffusionDet's box deltas, L1 coordinates, matcher and sampling stay as they are."""

from .diffusiondet import model

model.decoder.stage_sharing = "all_but_first"
model.decoder.dynamic_passes = 2
model.decoder.first_stage_dynamic_passes = 1
model.decoder.stage.box_pe_self_attention = True
model.decoder.stage.box_pe_dynamic_conv = True
model.decoder.stage.centerness = "static"
