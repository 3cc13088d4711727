"""RecursiveDet on the AdaMixer host (paper Table 2: 43M parameters at R50): RecSt (one stage module shared by
all six stages: the paper's parameter drop is five whole stages), RecDy (two adaptive-mixing passes per stage
on the same sampled features) and the bounding-box PE in self-attention and in the mixing. No centerness PE:
AdaMixer's sampling points leave the box (paper Sec. 4.2)."""

from .adamixer import model

model.decoder.stage_sharing = "all"
model.decoder.dynamic_passes = 2
model.decoder.stage.box_pe_self_attention = True
model.decoder.stage.box_pe_dynamic_conv = True
