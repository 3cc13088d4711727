"""AdaMixer's own modules; its stages are scheduled by the library's
:class:`~recursivedet.modeling.schedule.StageSchedule` and trained with the library's matcher and criterion."""

from .decoder import AdaMixerDecoder
from .detector import AdaMixer
from .neck import ChannelMapping
from .stage import AdaMixerStage

__all__ = ["AdaMixer", "AdaMixerDecoder", "AdaMixerStage", "ChannelMapping"]
