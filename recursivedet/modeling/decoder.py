"""The decoder of Sparse R-CNN and RecursiveDet (Sec. 3.2, Table 4): T stages on RoI features, scheduled by
:class:`~.schedule.StageSchedule`.

``stage_sharing`` picks which stages own parameters:
- ``"none"``: every stage has its own (Sparse R-CNN);
- ``"all"``: one set of parameters for all stages (RecSt);
- ``"all_but_first"``: the first stage has its own, stages 2..T share one set (RecSt-dagger).
``dynamic_passes`` > 1 reuses the dynamic layer and out layer inside a stage (RecDy).
"""

import torch
from torch import nn

from recursivedet.errors import ConfigValueError

from .box_utils import check_finite_boxes, cxcywh_to_xyxy
from .position_encoding import ImageSinePE, box_sine_embedding
from .roi_align import fixed_grid_roi_align, pool_roi_features
from .roi_position_encoding import AnalyticRoIPositionEncoding
from .schedule import STAGE_SHARING, StageSchedule
from .stage import DecoderStage

__all__ = ["STAGE_SHARING", "RecursiveDecoder"]


def focal_prior_bias(prior_prob: float) -> float:
    """The class bias whose sigmoid is ``prior_prob`` (focal loss init), computed in float32 as the official codes
    do, on the CPU whatever the default device (a model can then be built on the meta device)."""
    return -torch.log(torch.tensor((1 - prior_prob) / prior_prob, device="cpu")).item()


class RecursiveDecoder(nn.Module):
    """T stages refining N proposals; each stage pools RoI features of its input boxes.

    Args:
        stage: keyword arguments of :class:`DecoderStage` (width, heads, PE switches, ...).
        pooler: a detectron2 ``ROIPooler`` over the FPN levels (official: ROIAlignV2, 7x7, sampling 2).
        num_stages: T (6).
        stage_sharing: see the module docstring.
        dynamic_passes: dynamic-conv passes of every stage (2 = RecDy).
        first_stage_dynamic_passes: passes of stage 1; None = ``dynamic_passes``. The official
            RecursiveDet code runs one pass in its independent first stage and two in the shared ones.
        box_delta_init: "xavier" (official) or "zero" (every stage starts as the identity; needed when
            training from scratch or on small data, where xavier-initialised shared deltas collapse boxes).
        prior_prob: focal-loss prior of the class bias (0.01).
        analytic_roi_pe: compute the RoIAligned image PE p_f in closed form (same numbers, much cheaper;
            no c-channel positional maps are built). False pools the maps with RoIAlign in every stage,
            as the official code does. Ignored when the pooler has no fixed sampling grid.
        gather_roi_align: pool RoI features by row gathers from channels-last maps
            (:mod:`~recursivedet.modeling.roi_align`: same numbers, much faster); False runs the pooler itself
            (torchvision's roi_align), as the official code does. Ignored when the pooler has no fixed
            sampling grid.
        inference_stages: stages run at inference (paper Fig. 4); None = ``num_stages``. Fewer stages suit any
            decoder; more than were trained only a shared one (RecSt, RecSt-dagger), whose shared stage module
            simply runs again. Training always runs ``num_stages``.
    """

    def __init__(
        self,
        *,
        stage: dict,
        pooler,
        num_stages: int = 6,
        stage_sharing: str = "none",
        dynamic_passes: int = 1,
        first_stage_dynamic_passes: int | None = None,
        box_delta_init: str = "xavier",
        prior_prob: float = 0.01,
        analytic_roi_pe: bool = True,
        gather_roi_align: bool = True,
        inference_stages: int | None = None,
    ):
        super().__init__()
        self.schedule = StageSchedule(num_stages, stage_sharing, dynamic_passes, first_stage_dynamic_passes)
        self.inference_stages = self.schedule.check_stage_count(inference_stages, "model.decoder.inference_stages")
        if box_delta_init not in ("xavier", "zero"):
            raise ConfigValueError(f"box_delta_init must be 'xavier' or 'zero', got {box_delta_init!r}")
        self.pooler = pooler
        self.num_stages = num_stages
        self.stage_sharing = stage_sharing
        self.stages = nn.ModuleList(DecoderStage(**stage) for _ in range(self.schedule.num_modules))
        self.dynamic_passes = dynamic_passes
        self.first_stage_dynamic_passes = first_stage_dynamic_passes
        num_feats = self.stages[0].dim // 2
        self.image_pe = ImageSinePE(num_feats)
        self.analytic_pe = None
        self.gather_roi_align = gather_roi_align and fixed_grid_roi_align(pooler)
        if analytic_roi_pe and fixed_grid_roi_align(pooler):
            self.analytic_pe = AnalyticRoIPositionEncoding(pooler, num_feats)
        self._reset_parameters(box_delta_init, prior_prob)

    def _reset_parameters(self, box_delta_init: str, prior_prob: float):
        # Official init: xavier on every weight of dim > 1, focal prior on the class bias. The per-channel PE's
        # zeros are skipped, so that they draw no random numbers and the other weights are the official form's.
        zeros = {id(p) for stage in self.stages for p in stage.dynamic_conv.zero_initialised_parameters()}
        for p in self.parameters():
            if p.dim() > 1 and id(p) not in zeros:
                nn.init.xavier_uniform_(p)
        bias = focal_prior_bias(prior_prob)
        for stage in self.stages:
            nn.init.constant_(stage.class_logits.bias, bias)
            if box_delta_init == "zero":
                nn.init.zeros_(stage.box_delta.weight)
                nn.init.zeros_(stage.box_delta.bias)
            stage.dynamic_conv.reset_parameters()
            if stage.dynamic_conv.centerness is not None:
                stage.dynamic_conv.centerness.reset_parameters()

    def stage_module(self, t: int) -> DecoderStage:
        """The parameters used at stage t (0-based)."""
        return self.stages[self.schedule.module_index(t)]

    def stage_passes(self, t: int) -> int:
        return self.schedule.passes(t)

    @property
    def feature_memory_format(self) -> torch.memory_format:
        """The layout in which the decoder reads FPN maps fastest: channels-last for the gathered RoIAlign,
        the standard one for torchvision's roi_align (which would copy channels-last maps in every stage)."""
        if self.gather_roi_align:
            return torch.channels_last
        return torch.contiguous_format

    def pool(self, features, pixel_boxes: torch.Tensor) -> torch.Tensor:
        """(B * N, S, c) RoI features of (B, N, 4) pixel boxes on the FPN maps (see ``gather_roi_align``)."""
        check_finite_boxes(pixel_boxes, "boxes given to RoIAlign")
        return pool_roi_features(self.pooler, features, pixel_boxes, self.gather_roi_align)

    @property
    def uses_image_pe(self) -> bool:
        return any(s.dynamic_conv.box_pe for s in self.stages)

    def forward(
        self,
        features,
        boxes,
        proposal_features,
        whwh,
        pe_extents=None,
        num_stages: int | None = None,
        return_features: bool = False,
        condition: torch.Tensor | None = None,
    ):
        """Run the stages.

        Args:
            features: list of FPN maps (B, c, H_l, W_l) in the pooler's level order (channels-last memory format
                for the gathered RoIAlign, which would otherwise copy them in every stage).
            boxes: (B, N, 4) initial normalised (cx, cy, w, h) boxes.
            proposal_features: (B, N, c) initial proposal features; None: each proposal's mean RoI feature in the
                first stage (DiffusionDet, which has no learnable proposal features).
            whwh: (B, 4) image sizes (w, h, w, h) in pixels.
            pe_extents: per level, (B, 2) height and width in cells over which each image's PE is
                normalised (needed when a stage uses the dynamic-conv box PE).
            num_stages: stages to run; None = ``num_stages`` in training and ``inference_stages`` in eval mode.
                More than were trained needs a shared decoder (see ``inference_stages``).
            return_features: also return the last stage's object features q^T (B, N, c) (REGO's H_dec(0)).
            condition: (B, condition_dim) per-image conditioning handed to every stage (DiffusionDet's time
                embedding; see :class:`DecoderStage`); a shared stage applies its own modulation at each use.
        Returns:
            list over stages of (class logits (B, N, K), boxes (B, N, 4)); with ``return_features`` the pair
            (that list, q^T).
        """
        image_pos = None  # dense positional maps, built once on first use when not analytic
        outputs = []
        if num_stages is None:
            num_stages = self.num_stages if self.training else self.inference_stages
        else:
            self.schedule.check_stage_count(num_stages, "num_stages")
        for t in range(num_stages):
            stage = self.stage_module(t)
            pixel_boxes = cxcywh_to_xyxy(boxes) * whwh[:, None, :]
            roi = self.pool(features, pixel_boxes)
            if proposal_features is None:
                proposal_features = roi.mean(1).view(*boxes.shape[:2], -1)
            roi_pos = None
            if stage.dynamic_conv.box_pe:
                if self.analytic_pe is not None:
                    roi_pos = self.analytic_pe(pixel_boxes, [f.shape[-2:] for f in features], pe_extents)
                else:
                    if image_pos is None:
                        image_pos = [self.image_pe(f, e) for f, e in zip(features, pe_extents, strict=True)]
                    roi_pos = pool_roi_features(self.pooler, image_pos, pixel_boxes, gather=False)
            box_sine = box_sine_embedding(boxes, stage.dim // 2) if stage.uses_box_sine else None
            # Without a conditioning the stage is called exactly as before it existed (the host's call).
            conditioning = {} if condition is None else {"condition": condition}
            logits, new_boxes, proposal_features = stage(
                proposal_features, boxes, roi, roi_pos, box_sine, passes=self.stage_passes(t), **conditioning
            )
            outputs.append((logits, new_boxes))
            boxes = new_boxes.detach()
        return (outputs, proposal_features) if return_features else outputs
