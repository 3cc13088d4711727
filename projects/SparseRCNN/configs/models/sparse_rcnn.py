"""Sparse R-CNN (the host detector) on ResNet-50-FPN: 6 independent stages, one dynamic-conv pass, no
positional encodings, Sparse R-CNN's box deltas. Loads official Sparse R-CNN checkpoints after conversion
(``python -m recursivedet.convert``)."""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import FPN, BasicStem, ResNet
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from detectron2.modeling.poolers import ROIPooler

from recursivedet.modeling import HungarianMatcher, RecurrentGlimpseDecoder, RecursiveDecoder, SetCriterion
from recursivedet.projects.SparseRCNN.modeling import RecursiveDet

model = L(RecursiveDet)(
    backbone=L(FPN)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="FrozenBN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="FrozenBN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=2,
        ),
        in_features="${.bottom_up.out_features}",
        out_channels="${..decoder.stage.dim}",
        top_block=L(LastLevelMaxPool)(),
    ),
    decoder=L(RecursiveDecoder)(
        stage=dict(
            dim=256,
            num_heads=8,
            ffn_dim=2048,
            dropout=0.0,
            dynamic_dim=64,
            pooler_resolution="${..pooler.output_size}",
            num_classes=80,
            num_cls_layers=1,
            num_reg_layers=3,
            box_pe_self_attention=False,
            box_pe_dynamic_conv=False,
            centerness="none",
            # How the box PE enters the dynamic conv: "per_channel" acts; "official" (the official code's
            # p_f . p_k on every hidden channel) is removed by the next LayerNorm, with any centerness.
            dynamic_conv_pe_form="per_channel",
            box_refinement="deltas",
        ),
        pooler=L(ROIPooler)(
            output_size=7,
            scales=(1 / 4, 1 / 8, 1 / 16, 1 / 32),
            sampling_ratio=2,
            pooler_type="ROIAlignV2",
        ),
        num_stages=6,
        stage_sharing="none",
        dynamic_passes=1,
        first_stage_dynamic_passes=None,
        box_delta_init="xavier",
        prior_prob=0.01,
        # Same numbers, computed faster (False: the official code's way): see README "Performance".
        analytic_roi_pe=True,
        gather_roi_align=True,
        # Stages run at inference (paper Fig. 4); None: num_stages. More than trained needs shared stages.
        inference_stages=None,
    ),
    # The official Sparse R-CNN code takes the L1 loss and cost on normalised (x1, y1, x2, y2).
    # The matching cost equals the loss (paper Sec. 3.1): the matcher takes the criterion's weights.
    criterion=L(SetCriterion)(
        class_weight=2.0,
        l1_weight=5.0,
        giou_weight=2.0,
        focal_alpha=0.25,
        focal_gamma=2.0,
        l1_box_format="xyxy",
        matcher=L(HungarianMatcher)(
            class_weight="${..class_weight}",
            l1_weight="${..l1_weight}",
            giou_weight="${..giou_weight}",
            focal_alpha="${..focal_alpha}",
            focal_gamma="${..focal_gamma}",
            l1_box_format="${..l1_box_format}",
        ),
    ),
    in_features=["p2", "p3", "p4", "p5"],
    num_proposals=100,
    deep_supervision=True,
    detections_per_image=100,
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    input_format="RGB",
    proposal_box_init="image",
    channels_last=True,  # the backbone's memory format; same numbers
    fold_frozen_batchnorm=True,  # frozen batch norms applied inside the convolutions; same numbers
    # REGO refinement after the decoder (REGO, CVPR 2022), off with 0 stages: model.rego.num_stages=3 adds it
    # (SparseRCNN/models/recursivedet_rego.py). Width, classes, heads, FFN and glimpse size follow the decoder, as
    # the official REGO code takes them from its host transformer.
    rego=L(RecurrentGlimpseDecoder)(
        num_stages=0,  # K (REGO Table 2)
        glimpse_scale=1.0,  # multiplies every alpha (Table 3)
        alphas=None,  # None: (K, ..., 2, 1) (Sec. 4.3); e.g. [1, 1, 1] for Sec. 5.3's ablation
        num_layers=2,  # decoder layers per stage (Sec. 4.3)
        dim="${..decoder.stage.dim}",
        num_classes="${..decoder.stage.num_classes}",
        num_heads="${..decoder.stage.num_heads}",
        ffn_dim="${..decoder.stage.ffn_dim}",
        dropout="${..decoder.stage.dropout}",
        pooler_resolution="${..decoder.pooler.output_size}",
        glimpse_groups=4,  # groups of the glimpse conv (official code)
        aux_losses=False,  # losses on each stage's earlier layers: see RecurrentGlimpseDecoder
        at_inference=True,  # False: trained with REGO, inferred without (Appendix A.2, Table 4)
        prior_prob=0.01,
    ),
)
