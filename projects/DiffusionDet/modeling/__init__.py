"""DiffusionDet's own modules; its stages are the library's :class:`~recursivedet.modeling.DecoderStage` with
a time conditioning, scheduled by :class:`~recursivedet.modeling.RecursiveDecoder`."""

from .criterion import DynamicKCriterion
from .detector import DiffusionDet
from .diffusion import BoxDiffusion
from .matcher import DynamicKMatcher
from .sampling import DDIMSampler
from .time_embedding import TimeEmbedding, timestep_sinusoid

__all__ = [
    "BoxDiffusion",
    "DDIMSampler",
    "DiffusionDet",
    "DynamicKCriterion",
    "DynamicKMatcher",
    "TimeEmbedding",
    "timestep_sinusoid",
]
