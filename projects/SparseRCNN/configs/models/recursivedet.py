"""RecursiveDet on the Sparse R-CNN host, as in the official code (paper Table 6, last row):
RecSt-dagger (stage 1 independent, stages 2..6 shared), RecDy (two dynamic-conv passes in the shared
stages, one in the first), bounding-box PE in self-attention and dynamic conv, static centerness PE,
boxes refined in inverse-sigmoid space."""

from .sparse_rcnn import model

model.decoder.stage.box_pe_self_attention = True
model.decoder.stage.box_pe_dynamic_conv = True
model.decoder.stage.centerness = "static"
model.decoder.stage.box_refinement = "sigmoid"
model.decoder.stage_sharing = "all_but_first"
model.decoder.dynamic_passes = 2
model.decoder.first_stage_dynamic_passes = 1
model.criterion.l1_box_format = "cxcywh"  # the official RecursiveDet code's L1 coordinates
