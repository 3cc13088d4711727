"""Backbones beyond detectron2's, built from LazyConfig nodes."""

from .mobilenet_v2 import (
    MOBILENET_V2_PIXEL_MEAN,
    MOBILENET_V2_PIXEL_STD,
    MobileNetV2Backbone,
    MobileNetV2WeightsNotFoundError,
    build_mobilenet_v2_fpn_backbone,
    load_mobilenet_v2_imagenet_weights,
    mobilenet_v2_imagenet_weights_path,
)

__all__ = [
    "MOBILENET_V2_PIXEL_MEAN",
    "MOBILENET_V2_PIXEL_STD",
    "MobileNetV2Backbone",
    "MobileNetV2WeightsNotFoundError",
    "build_mobilenet_v2_fpn_backbone",
    "load_mobilenet_v2_imagenet_weights",
    "mobilenet_v2_imagenet_weights_path",
]
