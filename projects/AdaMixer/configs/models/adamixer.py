"""AdaMixer (every RecursiveDet switch off) on ResNet-50 with the channel-mapping neck: 6 independent stages,
300 queries, G = 4 groups of P_in = 32 sampled points, P_out = 128, one mixing pass, Hungarian matching and
losses on every stage. 134,842,904 parameters, as the official code (mmdet ResNet-50 with trainable batch-norm
affine parameters and fixed statistics, stem and res2 frozen but counted)."""

from detectron2.config import LazyCall as L
from detectron2.modeling.backbone import BasicStem, ResNet

from recursivedet.model_zoo import get_config
from recursivedet.modeling import HungarianMatcher, SetCriterion
from recursivedet.projects.AdaMixer.modeling import AdaMixer, AdaMixerDecoder, ChannelMapping

model = L(AdaMixer)(
    backbone=L(ChannelMapping)(
        bottom_up=L(ResNet)(
            stem=L(BasicStem)(in_channels=3, out_channels=64, norm="BN"),
            stages=L(ResNet.make_default_stages)(depth=50, stride_in_1x1=False, norm="BN"),
            out_features=["res2", "res3", "res4", "res5"],
            freeze_at=0,  # the neck freezes the stem and res2 (official frozen_stages=1) without dropping them
        ),
        in_features="${.bottom_up.out_features}",
        out_channels="${..decoder.stage.dim}",
        norm_groups=32,
        norm_eval=True,
        frozen_stages=1,
    ),
    decoder=L(AdaMixerDecoder)(
        stage=dict(
            dim=256,
            num_heads=8,
            ffn_dim=2048,
            dropout=0.0,
            num_groups=4,  # G
            in_points=32,  # P_in
            out_points=128,  # P_out
            num_classes=80,
            num_cls_layers=1,
            num_reg_layers=1,
            box_pe_self_attention=False,
            box_pe_dynamic_conv=False,
            centerness="none",  # cb-PE does not apply to this host
            # Same numbers, computed faster (False: F.grid_sample per level, the official code's way).
            gather_sampling=True,
            # Same numbers: the mixing's intermediates bounded to what this many queries make (None: no bound).
            mixing_chunk_queries=128,
        ),
        num_stages=6,
        stage_sharing="none",
        dynamic_passes=1,
        first_stage_dynamic_passes=None,
        prior_prob=0.01,
        inference_stages=None,  # stages at inference (RecursiveDet Fig. 4); None: num_stages
    ),
    # The official matcher and losses: focal 2, L1 5 on normalised (x1, y1, x2, y2), GIoU 2; cost = loss.
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
    num_proposals=300,
    deep_supervision=True,
    detections_per_image="${.num_proposals}",  # official: top N of N x K scores
    pixel_mean=[123.675, 116.280, 103.530],
    pixel_std=[58.395, 57.120, 57.375],
    input_format="RGB",
    channels_last=True,  # the backbone's memory format; same numbers up to float rounding
    # REGO after the decoder, off with 0 stages (model.rego.num_stages=3 adds it); the Sparse R-CNN host's REGO
    # node, its glimpses RoIAligned to 7 x 7 from the neck's maps.
    rego=get_config("SparseRCNN/models/sparse_rcnn.py").model.rego,
)
model.rego.pooler_resolution = 7
