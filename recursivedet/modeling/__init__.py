"""Modeling: the RecursiveDet meta-architecture and its parts."""

from . import backbone  # noqa: F401  (registers backbones)
from .criterion import SetCriterion
from .decoder import STAGE_SHARING, RecursiveDecoder
from .matcher import HungarianMatcher
from .meta_arch import RecursiveDet
from .position_encoding import CENTERNESS_MODES
from .rego import RecurrentGlimpseDecoder
from .stage import BOX_REFINEMENTS, DecoderStage

__all__ = [
    "BOX_REFINEMENTS",
    "CENTERNESS_MODES",
    "STAGE_SHARING",
    "DecoderStage",
    "HungarianMatcher",
    "RecurrentGlimpseDecoder",
    "RecursiveDecoder",
    "RecursiveDet",
    "SetCriterion",
]
