"""DiffusionDet (every RecursiveDet switch off) on ResNet-50-FPN: 6 independent stages of Sparse R-CNN plus the
time modulation, 500 proposals, one-to-many dynamic-k matching, 1-step DDIM sampling with box renewal and NMS
(official defaults). 110,673,336 parameters, as the official code. The backbone and the decoder's sizes are the
Sparse R-CNN host's (``SparseRCNN/models/sparse_rcnn.py``)."""

from detectron2.config import LazyCall as L

from recursivedet.model_zoo import get_config
from recursivedet.projects.DiffusionDet.modeling import (
    BoxDiffusion,
    DDIMSampler,
    DiffusionDet,
    DynamicKCriterion,
    DynamicKMatcher,
    TimeEmbedding,
)

_host = get_config("SparseRCNN/models/sparse_rcnn.py").model

model = L(DiffusionDet)(
    backbone=_host.backbone,
    decoder=_host.decoder,
    # sinusoid of the model width -> 4x the width (official); the stages' condition_dim
    time_embedding=L(TimeEmbedding)(dim=256, out_dim=1024),
    diffusion=L(BoxDiffusion)(timesteps=1000, signal_scale=2.0),
    # The matching cost weights equal the loss weights.
    criterion=L(DynamicKCriterion)(
        class_weight=2.0,
        l1_weight=5.0,
        giou_weight=2.0,
        focal_alpha=0.25,
        focal_gamma=2.0,
        matcher=L(DynamicKMatcher)(
            class_weight="${..class_weight}",
            l1_weight="${..l1_weight}",
            giou_weight="${..giou_weight}",
            focal_alpha="${..focal_alpha}",
            focal_gamma="${..focal_gamma}",
            center_radius=2.5,
            candidate_k=5,
        ),
    ),
    sampler=L(DDIMSampler)(
        steps=1,  # DDIM steps (paper Table 2: 1)
        eta=1.0,
        box_renewal=True,
        renewal_threshold=0.5,
        ensemble=True,
        ensemble_last_step=True,  # False: the official code's ensemble, which leaves the last step out
        nms_threshold=0.5,
        seed=0,
    ),
    in_features=["p2", "p3", "p4", "p5"],
    num_proposals=500,
    deep_supervision=True,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    input_format="RGB",
    channels_last=True,
    fold_frozen_batchnorm=True,
    # REGO after the decoder, off with 0 stages (model.rego.num_stages=3 adds it); the host's REGO node.
    rego=_host.rego,
)
model.decoder.stage.condition_dim = "${...time_embedding.out_dim}"
# The noisy boxes can have w or h = 0; a box PE turned on divides by max(w, 1e-3), max(h, 1e-3).
model.decoder.stage.box_pe_min_size = 1e-3
