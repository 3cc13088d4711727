"""The AdaMixer detector (AdaMixer, CVPR 2022; official ``QueryBased`` with ``InitialQueryGenerator`` and
``AdaMixerDecoder``) on this library: backbone and channel-mapping neck, N queries, the decoder, Hungarian
matching and set losses on every stage (library :class:`~recursivedet.modeling.SetCriterion`), top-k inference.

Queries: N learnable content vectors, layer-normalised without affine parameters, and the position of the whole
image (x, y, z, r) = (w / 2, h / 2, log2 sqrt(w h), log2(h / w)) of each image, not learnable. The official code
keeps these boxes as an N x 4 embedding (normalised (0.5, 0.5, 1, 1)) that no gradient reaches; it is kept
here for its parameter count and checkpoints.
"""

import torch
from detectron2.modeling import Backbone
from detectron2.modeling.poolers import ROIPooler
from torch import nn
from torch.nn import functional as F

from recursivedet.modeling.box_utils import cxcywh_to_xyxy, image_whwh, xyxy_to_cxcywh
from recursivedet.modeling.criterion import SetCriterion
from recursivedet.modeling.query_detector import Decoded, QueryDetector
from recursivedet.modeling.rego import RecurrentGlimpseDecoder
from recursivedet.modeling.roi_align import pool_roi_features

from .boxes import xyxy_to_xyzr, xyzr_to_xyxy
from .decoder import AdaMixerDecoder


class AdaMixer(QueryDetector):
    """Backbone + neck, query generator, decoder, criterion.

    Args:
        backbone: a detectron2 backbone giving ``in_features`` at the decoder's width (the official
            :class:`~.neck.ChannelMapping` over ResNet res2-res5).
        decoder: the :class:`~.decoder.AdaMixerDecoder`.
        criterion: the library's :class:`SetCriterion` (official: focal 2, L1 5 on normalised xyxy, GIoU 2).
        in_features: backbone outputs sampled by the decoder, high to low resolution.
        num_proposals: N queries (300 in RecursiveDet Table 2).
        deep_supervision: losses on every stage (official, all weights 1) or the last one only.
        detections_per_image: top-k over N x K sigmoid scores at inference (official: N), no NMS.
        pixel_mean, pixel_std, input_format: input normalisation (official: RGB, torchvision statistics).
        channels_last: run the backbone in channels-last memory format (same numbers up to rounding).
        rego: REGO's :class:`~recursivedet.modeling.rego.RecurrentGlimpseDecoder` after the decoder, on its last
            positions (as boxes) and query contents; its glimpses are RoIAligned from the neck's maps (this host's
            decoder samples points and has no RoI pooler). None or 0 stages: none.
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        decoder: AdaMixerDecoder,
        criterion: SetCriterion,
        in_features: list[str] = ("p2", "p3", "p4", "p5"),
        num_proposals: int = 300,
        deep_supervision: bool = True,
        detections_per_image: int = 300,
        pixel_mean: tuple[float, ...] = (123.675, 116.280, 103.530),
        pixel_std: tuple[float, ...] = (58.395, 57.120, 57.375),
        input_format: str = "RGB",
        channels_last: bool = False,
        rego: RecurrentGlimpseDecoder | None = None,
    ):
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
            fold_frozen_batchnorm=False,  # the official ResNet applies its frozen batch norms after each conv
        )
        self.decoder = decoder
        self.criterion = criterion
        self.init_proposal_boxes = nn.Embedding(num_proposals, 4)
        self.init_proposal_features = nn.Embedding(num_proposals, dim)
        with torch.no_grad():
            self.init_proposal_boxes.weight[:, :2] = 0.5
            self.init_proposal_boxes.weight[:, 2:] = 1.0
        self.attach_rego(rego)
        self.glimpse_pooler = None
        if self.rego is not None:
            self.glimpse_pooler = ROIPooler(
                output_size=self.rego.resolution,
                scales=[1.0 / s for s in self.strides],
                sampling_ratio=2,
                pooler_type="ROIAlignV2",
            )

    def glimpse_pool(self, features, pixel_boxes: torch.Tensor) -> torch.Tensor:
        """REGO's RoI features (B * N, R * R, c) of (B, N, 4) pixel boxes on the neck's maps (ROIAlignV2, 2
        samples per bin, as the library's decoder pools)."""
        gather = features[0].is_contiguous(memory_format=torch.channels_last)
        return pool_roi_features(self.glimpse_pooler, features, pixel_boxes, gather)

    def initial_queries(self, whwh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, c) layer-normalised contents and (B, N, 4) detached positions of the images (B, 4) whwh."""
        boxes = cxcywh_to_xyxy(self.init_proposal_boxes.weight)[None] * whwh[:, None, :]
        content = self.init_proposal_features.weight
        content = F.layer_norm(content, content.shape[-1:])[None].expand(len(whwh), -1, -1)
        return content, xyxy_to_xyzr(boxes).detach()

    def decode(self, images, feature_maps, num_stages=None, targets=None, return_states=False) -> Decoded:
        """The N queries through the decoder, its (x, y, z, r) positions given as normalised cxcywh boxes (see
        :meth:`QueryDetector.decode`)."""
        whwh = image_whwh(images.image_sizes, self.device)
        content, xyzr = self.initial_queries(whwh)
        layout = self.decoder.feature_memory_format
        features = [feature_maps[f].contiguous(memory_format=layout) for f in self.in_features]
        run = self.decoder(features, self.strides, content, xyzr, whwh, num_stages, return_features=return_states)
        outputs, states = run if return_states else (run, None)
        boxes = [(logits, xyxy_to_cxcywh(xyzr_to_xyxy(b) / whwh[:, None, :])) for logits, b in outputs]
        return Decoded(boxes, states, features, whwh)
