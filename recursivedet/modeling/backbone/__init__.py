"""Backbones beyond detectron2's, built from LazyConfig nodes. The Swin detection backbone is in
``recursivedet.modeling.backbone.swin`` (it imports timm when imported)."""

from .mobilenet_v2 import (
    MOBILENET_V2_PIXEL_MEAN,
    MOBILENET_V2_PIXEL_STD,
    MobileNetV2Backbone,
    MobileNetV2WeightsNotFoundError,
    build_mobilenet_v2_fpn_backbone,
    load_mobilenet_v2_imagenet_weights,
    mobilenet_v2_imagenet_weights_path,
)
from .timm_backbone import TimmBackbone, TimmWeightsError

__all__ = [
    "MOBILENET_V2_PIXEL_MEAN",
    "MOBILENET_V2_PIXEL_STD",
    "MobileNetV2Backbone",
    "MobileNetV2WeightsNotFoundError",
    "TimmBackbone",
    "TimmWeightsError",
    "build_mobilenet_v2_fpn_backbone",
    "load_mobilenet_v2_imagenet_weights",
    "mobilenet_v2_imagenet_weights_path",
]
