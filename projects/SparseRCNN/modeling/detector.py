"""The RecursiveDet meta-architecture (Sparse R-CNN host): N learnable proposal boxes and features refined by
the (recursive) dynamic-conv decoder; the rest is the host contract of
:class:`~recursivedet.modeling.query_detector.QueryDetector`."""

import math

import torch
from detectron2.modeling import Backbone
from torch import nn

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.criterion import SetCriterion
from recursivedet.modeling.decoder import RecursiveDecoder
from recursivedet.modeling.query_detector import Decoded, QueryDetector
from recursivedet.modeling.rego import RecurrentGlimpseDecoder


def initial_boxes(kind: str, num: int) -> torch.Tensor:
    """(num, 4) normalised (cx, cy, w, h) initial proposal boxes: "image" or "grid" (see RecursiveDet)."""
    if kind == "image":
        return torch.tensor([0.5, 0.5, 1.0, 1.0]).repeat(num, 1)
    if kind == "grid":
        cols = math.ceil(math.sqrt(num))
        rows = math.ceil(num / cols)
        index = torch.arange(num)
        cx = (index % cols + 0.5) / cols
        cy = (index // cols + 0.5) / rows
        return torch.stack([cx, cy, torch.full_like(cx, 1 / cols), torch.full_like(cy, 1 / rows)], dim=1)
    raise ConfigValueError(f"proposal_box_init must be 'image' or 'grid', got {kind!r}")


# Not in detectron2's META_ARCH_REGISTRY: the model is built from LazyConfig nodes (its sub-modules passed in);
# a yacs config would need a key for every switch, a second description of the same model.
class RecursiveDet(QueryDetector):
    """End-to-end region-based detector with a (recursive) dynamic-conv decoder.

    With ``stage_sharing="none"``, one dynamic-conv pass and every PE off, it is plain Sparse R-CNN.

    Args:
        backbone: a detectron2 backbone giving ``in_features`` (default ResNet-50-FPN p2-p5, c channels).
        decoder: the :class:`RecursiveDecoder` (stages, sharing, passes, PE switches, pooler).
        criterion: the :class:`SetCriterion` (matching cost = loss weights).
        in_features: backbone outputs pooled by the decoder, in the pooler's level order.
        num_proposals: N learnable proposal boxes and features (100 or 300 in the paper).
        deep_supervision: losses on every stage (True) or on the last one only.
        detections_per_image: top-k over proposals x classes at inference.
        pixel_mean, pixel_std: per-channel normalisation in the input format's channel order.
        input_format: "RGB" (official recipe, torchvision ImageNet statistics) or "BGR".
        proposal_box_init: initial learnable boxes, "image" (official: every box the whole image) or "grid"
            (a regular grid of cells over the image, Sparse R-CNN's 'Grid' initialisation, Table 6 of
            its paper), which gives the first stage distinct boxes to start from.
        channels_last: run the backbone in channels-last memory format (its convolutions are then faster on
            CPUs and on GPUs with tensor cores). The decoder receives the maps in the layout it reads fastest.
            Same results up to float rounding.
        fold_frozen_batchnorm: apply the backbone's frozen batch norms as part of the convolutions before
            them (:mod:`~recursivedet.modeling.backbone.folded_norm`; same parameters, same results up to
            float rounding).
        rego: REGO's :class:`~recursivedet.modeling.rego.RecurrentGlimpseDecoder`, run after the decoder on
            its last boxes and object features; None or one with 0 stages: no REGO.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        decoder: RecursiveDecoder,
        criterion: SetCriterion,
        in_features: list[str] = ("p2", "p3", "p4", "p5"),
        num_proposals: int = 100,
        deep_supervision: bool = True,
        detections_per_image: int = 100,
        pixel_mean: tuple[float, ...] = (123.675, 116.280, 103.530),
        pixel_std: tuple[float, ...] = (58.395, 57.120, 57.375),
        input_format: str = "RGB",
        proposal_box_init: str = "image",
        channels_last: bool = True,
        fold_frozen_batchnorm: bool = True,
        rego: RecurrentGlimpseDecoder | None = None,
    ):
        if proposal_box_init not in ("image", "grid"):
            raise ConfigValueError(f"model.proposal_box_init must be 'image' or 'grid', got {proposal_box_init!r}")
        dim = decoder.stages[0].dim
        super().__init__(
            backbone=backbone,
            dim=dim,
            in_features=in_features,
            num_proposals=num_proposals,
            deep_supervision=deep_supervision,
            detections_per_image=detections_per_image,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            input_format=input_format,
            channels_last=channels_last,
            fold_frozen_batchnorm=fold_frozen_batchnorm,
        )
        self.decoder = decoder
        self.criterion = criterion
        self.init_proposal_features = nn.Embedding(num_proposals, dim)
        self.init_proposal_boxes = nn.Embedding(num_proposals, 4)
        with torch.no_grad():
            self.init_proposal_boxes.weight.copy_(initial_boxes(proposal_box_init, num_proposals))
        self.attach_rego(rego)

    def decode(self, images, feature_maps, num_stages=None, targets=None, return_states=False) -> Decoded:
        """The N learnable proposal boxes and features through the decoder (see :meth:`QueryDetector.decode`)."""
        features, whwh, extents = self.pooled_features(images, feature_maps)
        b = len(images)
        boxes = self.init_proposal_boxes.weight[None].expand(b, -1, -1)
        proposal_features = self.init_proposal_features.weight[None].expand(b, -1, -1)
        run = self.decoder(features, boxes, proposal_features, whwh, extents, num_stages, return_features=return_states)
        outputs, states = run if return_states else (run, None)
        return Decoded(outputs, states, features, whwh)
