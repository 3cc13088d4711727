"""Modeling: the parts every host shares: the (recursive) decoder, its stages and positional encodings, the
matcher and criterion, REGO, and the host contract (:mod:`.query_detector`). The hosts' detectors live in their
projects (``recursivedet.projects.<Host>.modeling``)."""

from . import backbone  # noqa: F401  (registers backbones)
from .criterion import SetCriterion
from .decoder import STAGE_SHARING, RecursiveDecoder
from .matcher import HungarianMatcher
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
    "SetCriterion",
]


def __getattr__(name: str):
    # The Sparse R-CNN host's detector moved to its project; the library does not import projects.
    if name == "RecursiveDet":
        raise ImportError(
            "RecursiveDet is now in the Sparse R-CNN project: from recursivedet.projects.SparseRCNN.modeling import "
            "RecursiveDet"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
