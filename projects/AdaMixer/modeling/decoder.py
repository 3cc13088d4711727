"""The AdaMixer decoder: T stages refining N queries, scheduled by the library's
:class:`~recursivedet.modeling.schedule.StageSchedule` (RecursiveDet Sec. 3.2, Table 4), so stage sharing (RecSt,
RecSt-dagger) and extra mixing passes (RecDy) act on this host as on the others."""

import torch
from torch import nn

from recursivedet.modeling.schedule import StageSchedule

from .stage import AdaMixerStage


class AdaMixerDecoder(nn.Module):
    """Stages and their schedule.

    Args:
        stage: keyword arguments of :class:`AdaMixerStage`.
        num_stages: T (6).
        stage_sharing: "none" (AdaMixer), "all" (RecSt: one stage module for all T) or "all_but_first".
        dynamic_passes: adaptive-mixing passes per stage (2 = RecDy).
        first_stage_dynamic_passes: passes of stage 1; None = ``dynamic_passes``.
        prior_prob: focal-loss prior of the class bias (0.01).
        inference_stages: stages run at inference (RecursiveDet Fig. 4); None = ``num_stages``; more than were
            trained only with shared stages (see the library's ``RecursiveDecoder``).
    """

    def __init__(
        self,
        *,
        stage: dict,
        num_stages: int = 6,
        stage_sharing: str = "none",
        dynamic_passes: int = 1,
        first_stage_dynamic_passes: int | None = None,
        prior_prob: float = 0.01,
        inference_stages: int | None = None,
    ):
        super().__init__()
        self.schedule = StageSchedule(num_stages, stage_sharing, dynamic_passes, first_stage_dynamic_passes)
        self.inference_stages = self.schedule.check_stage_count(inference_stages, "model.decoder.inference_stages")
        self.num_stages = num_stages
        self.stages = nn.ModuleList(AdaMixerStage(**stage) for _ in range(self.schedule.num_modules))
        for s in self.stages:
            s.reset_parameters(prior_prob)

    @property
    def feature_memory_format(self) -> torch.memory_format:
        """The layout in which the stages read the maps fastest: channels-last for the gathered sampling, the
        standard one for ``F.grid_sample``."""
        return torch.channels_last if self.stages[0].sampling.gather else torch.contiguous_format

    def stage_module(self, t: int) -> AdaMixerStage:
        """The parameters used at stage t (0-based)."""
        return self.stages[self.schedule.module_index(t)]

    def forward(
        self, features, strides, query, xyzr, image_whwh, num_stages: int | None = None, return_features: bool = False
    ):
        """Run the stages.

        Args:
            features: per level (B, c, H_l, W_l) neck maps; strides: their strides.
            query: (B, N, c) initial query contents; xyzr: (B, N, 4) initial positions (x, y, z, r).
            image_whwh: (B, 4) image sizes (w, h, w, h) in pixels.
            num_stages: stages to run; None = ``num_stages`` in training, ``inference_stages`` in eval mode.
            return_features: also return the last query contents (B, N, c) (REGO's H_dec(0)).
        Returns:
            list over stages of (class logits (B, N, K), positions (B, N, 4)); positions are detached between
            stages (official code), not in the returned predictions. With ``return_features`` the pair (that
            list, the last query contents).
        """
        outputs = []
        if num_stages is None:
            num_stages = self.num_stages if self.training else self.inference_stages
        else:
            self.schedule.check_stage_count(num_stages, "num_stages")
        for t in range(num_stages):
            stage = self.stage_module(t)
            logits, new_xyzr, query = stage(features, strides, query, xyzr, image_whwh, self.schedule.passes(t))
            outputs.append((logits, new_xyzr))
            xyzr = new_xyzr.detach()
        return (outputs, query) if return_features else outputs
