"""AdaMixer's exportable graph (``python -m recursivedet.deploy``).

The decoder runs as it does in eager inference: its adaptive 3D sampling gathers the four neighbours of each point
from every level (:mod:`~.modeling.point_gather`, sizes read from the maps' shapes, which the exporters record
as shape operations), so one file serves every image size. A model set to sample with ``F.grid_sample``
(``gather_sampling=False``, the same numbers) is exported with the gathers too: its per-level extents are
Python numbers that a trace would freeze. REGO's glimpses, RoIAligned from the neck's maps in
eager mode, come from :func:`~recursivedet.deploy.graph.stacked_roi_align` (the same sampling points).
"""

import torch

from recursivedet.deploy.graph import DetectorGraph, stacked_roi_align
from recursivedet.modeling.box_utils import xyxy_to_cxcywh

from .modeling.boxes import xyzr_to_xyxy


class AdaMixerGraph(DetectorGraph):
    """One image (3, H, W) -> the AdaMixer model's top-K detections, K = ``min(detections_per_image, N x
    classes)``: boxes (K, 4) in pixels clipped to the image, scores (K,), classes (K,); REGO's when it runs at
    inference."""

    def __init__(self, model):
        super().__init__(model)
        for stage in model.decoder.stages:
            stage.sampling.gather = True
        num_classes = model.decoder.stages[0].class_logits.out_features
        self.num_detections = min(model.detections_per_image, model.num_proposals * num_classes)

    def glimpse_pool(self, features, pixel_boxes: torch.Tensor) -> torch.Tensor:
        """REGO's (N, R * R, c) RoI features of (1, N, 4) pixel boxes (the eager model's ``glimpse_pool``)."""
        return stacked_roi_align(self.model.glimpse_pooler, features, pixel_boxes)

    def forward(self, image: torch.Tensor):
        model = self.model
        features, size, _ = self.backbone_features(image)
        features = [f.contiguous(memory_format=model.decoder.feature_memory_format) for f in features]
        whwh = self.whwh(size)
        content, xyzr = model.initial_queries(whwh)
        with_rego = model.rego_at_inference()
        run = model.decoder(features, model.strides, content, xyzr, whwh, return_features=with_rego)
        outputs, states = run if with_rego else (run, None)
        logits, xyzr = outputs[-1]
        boxes = xyxy_to_cxcywh(xyzr_to_xyxy(xyzr) / whwh[:, None, :])
        if with_rego:
            logits, boxes = model.rego(features, self.glimpse_pool, boxes, states, whwh)[-1][-1]
        picked, scores, classes = self.top_k(logits[0], boxes[0], whwh, self.num_detections)
        return self.clipped(picked, whwh), scores, classes
