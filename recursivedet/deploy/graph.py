"""A trained model as one exportable graph: image in, boxes, scores and classes out, at any image size.

:class:`DetectorGraph` is the base of every host's graph (a project declares its own in its ``Host.export``).
:class:`DeployableDetector`, the Sparse R-CNN host's, runs the same modules as
:class:`~recursivedet.modeling.RecursiveDet` at inference (normalisation, padding, backbone, decoder, REGO when
it runs at inference, top-k), with three changes that let ``torch.jit.trace`` and ``torch.export`` record a
graph that works for every image size:

- every size (padding, ``whwh``, the positional-encoding extents, the feature-map sizes) is computed from the
  input's shape with tensor operations, never read into a Python number that a trace would freeze;
- RoIAlign gathers rows of one table that stacks every FPN level (:func:`stacked_roi_align`): no
  ``nonzero``/``argsort`` whose output size depends on the data, and only Gather, Mul and ReduceSum in ONNX;
- the RoI positional encoding samples at the traced map sizes (closed form) or pools the sine maps from the
  same stacked table (dense form).

The sampling points are those of :mod:`~recursivedet.modeling.roi_align` (the same functions), so the
graph's outputs equal the eager model's up to the order of float additions.
"""

import torch
from detectron2.modeling.poolers import ROIPooler, assign_boxes_to_levels
from detectron2.structures import Boxes
from torch import nn
from torch.nn import functional as F

from recursivedet.modeling.box_utils import cxcywh_to_xyxy
from recursivedet.modeling.roi_align import RoISampling, _axis_samples, fixed_grid_roi_align
from recursivedet.modeling.roi_position_encoding import AnalyticRoIPositionEncoding, SeparableRoIPE


def traced_roi_sampling(pooler: ROIPooler, boxes: torch.Tensor, map_sizes: torch.Tensor) -> RoISampling:
    """:func:`~recursivedet.modeling.roi_align.roi_sampling` with the map sizes as an (L, 2) tensor."""
    levels_ = pooler.level_poolers
    dtype = boxes.dtype
    if len(levels_) == 1:
        levels = torch.zeros_like(boxes[:, 0], dtype=torch.int64)
    else:
        levels = assign_boxes_to_levels(
            [Boxes(boxes)], pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
    scales = torch.tensor([p.spatial_scale for p in levels_], dtype=dtype, device=boxes.device)[levels]
    sizes = map_sizes.to(dtype)[levels]
    first = levels_[0]
    start = boxes * scales[:, None] - (0.5 if first.aligned else 0.0)
    width = start[:, 2] - start[:, 0]
    height = start[:, 3] - start[:, 1]
    if not first.aligned:
        width, height = width.clamp(min=1), height.clamp(min=1)
    res_h, res_w = pooler.output_size
    grid = first.sampling_ratio
    y = _axis_samples(start[:, 1], height / res_h, grid, res_h, sizes[:, 0])
    x = _axis_samples(start[:, 0], width / res_w, grid, res_w, sizes[:, 1])
    return RoISampling(levels, y, x, grid)


def hw_tensor(x: torch.Tensor) -> torch.Tensor:
    """(2,) int64 height and width of ``x`` that ``torch.jit.trace`` and ``torch.export`` record as shape
    operations (a Python int would be frozen into the graph)."""
    if torch.jit.is_tracing():
        return torch._shape_as_tensor(x)[-2:].to(x.device)
    return torch.stack([torch.scalar_tensor(s, dtype=torch.int64, device=x.device) for s in x.shape[-2:]])


def map_sizes_of(features: list[torch.Tensor]) -> torch.Tensor:
    """(L, 2) int64 heights and widths of the maps (see :func:`hw_tensor`)."""
    return torch.stack([hw_tensor(f) for f in features])


def stacked_roi_align(pooler: ROIPooler, features: list[torch.Tensor], pixel_boxes: torch.Tensor) -> torch.Tensor:
    """``gather_roi_align`` of every box from one table of all levels' rows (no data-dependent shapes).

    Args:
        features: per level, (B, c, H_l, W_l) maps. pixel_boxes: (B, N, 4) pixel (x1, y1, x2, y2).
    Returns:
        (B * N, R_h * R_w, c), as :func:`~recursivedet.modeling.roi_align.gather_roi_align`.
    """
    b, n = pixel_boxes.shape[:2]
    channels = features[0].shape[1]
    # As gather_roi_align (and detectron2): the boxes rounded to float32, the points in the maps' dtype.
    boxes = pixel_boxes.reshape(-1, 4).float().to(torch.promote_types(features[0].dtype, torch.float32))
    sizes = map_sizes_of(features)
    sampling = traced_roi_sampling(pooler, boxes, sizes)
    table = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, channels) for f in features])
    cells = sizes[:, 0] * sizes[:, 1] * b  # rows of each level in the table
    offsets = torch.cumsum(cells, 0) - cells
    image = torch.arange(b, device=boxes.device).repeat_interleave(n)
    height, width = sizes[sampling.levels, 0], sizes[sampling.levels, 1]
    y, x = sampling.y, sampling.x

    def neighbours(axis):  # (M, R, G, 2) cells and bilinear weights
        cells = torch.stack((axis.low, axis.high), dim=-1)
        return cells, torch.stack((1 - axis.frac, axis.frac), dim=-1) * axis.valid[..., None]

    y_cells, y_weights = neighbours(y)
    x_cells, x_weights = neighbours(x)
    base = offsets[sampling.levels] + image * height * width  # (M,)
    row = (base[:, None, None, None] + y_cells * width[:, None, None, None])[..., None, None, None]
    index = row + x_cells[:, None, None, None]  # (M, R_h, G, 2, R_w, G, 2)
    weight = y_weights[..., None, None, None] * x_weights[:, None, None, None] / sampling.grid**2
    order = (0, 1, 4, 2, 3, 5, 6)
    r_h, r_w = pooler.output_size
    bag = (sampling.grid * 2) ** 2
    index = index.permute(order).reshape(-1, bag)
    weight = weight.permute(order).reshape(-1, bag, 1).to(table.dtype)
    pooled = (table[index.reshape(-1)].view(-1, bag, channels) * weight).sum(1)
    return pooled.view(-1, r_h * r_w, channels)


def pad_to_multiple(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """Zero-pad the last two dimensions of ``x`` at the bottom and right to multiples of ``divisor``. The
    amounts are traced tensors under ``torch.jit.trace`` and symbolic integers under ``torch.export``."""
    if divisor <= 1:
        return x
    if torch.jit.is_tracing():
        size = hw_tensor(x)
        pad = torch.div(size + divisor - 1, divisor, rounding_mode="floor") * divisor - size
        return F.pad(x, [0, pad[1], 0, pad[0]])
    h, w = x.shape[-2:]
    # padded sizes written as multiples of the divisor, which torch.export's shape reasoning then sees as such
    return F.pad(x, [0, (w + divisor - 1) // divisor * divisor - w, 0, (h + divisor - 1) // divisor * divisor - h])


class TracedRoIPositionEncoding(AnalyticRoIPositionEncoding):
    """The closed-form pooled image PE at map sizes given as a tensor (set by the graph before each call)."""

    map_sizes: torch.Tensor | None = None

    def __call__(self, pixel_boxes: torch.Tensor, map_sizes, extents) -> SeparableRoIPE:
        b, n, _ = pixel_boxes.shape
        dtype = torch.promote_types(pixel_boxes.dtype, torch.float32)
        boxes = pixel_boxes.reshape(-1, 4).to(dtype)
        sampling = traced_roi_sampling(self.pooler, boxes, self.map_sizes)
        image = torch.arange(b, device=boxes.device).repeat_interleave(n)
        norm_extents = torch.stack([e.to(dtype) for e in extents])[sampling.levels, image]
        dim_t = self.temperature ** (
            2 * torch.div(torch.arange(self.num_feats, device=boxes.device), 2, rounding_mode="floor") / self.num_feats
        )
        y_sum, y_valid = self._axis(sampling.y, norm_extents[:, 0], dim_t)
        x_sum, x_valid = self._axis(sampling.x, norm_extents[:, 1], dim_t)
        return SeparableRoIPE(y_sum, x_valid, x_sum, y_valid)


class StackedDenseRoIPositionEncoding:
    """The pooled image PE of a decoder without the closed form (``analytic_roi_pe=False``): the dense sine maps
    of the features, set by the graph before each call (:meth:`set_features`), pooled by :func:`stacked_roi_align`
    (the eager decoder pools them with detectron2's pooler, whose per-level selection has data-dependent
    shapes)."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.maps: list[torch.Tensor] | None = None

    def set_features(self, features: list[torch.Tensor], extents) -> None:
        self.maps = [self.decoder.image_pe(f, e) for f, e in zip(features, extents, strict=True)]

    def __call__(self, pixel_boxes: torch.Tensor, map_sizes, extents) -> torch.Tensor:
        return stacked_roi_align(self.decoder.pooler, self.maps, pixel_boxes)


class DetectorGraph(nn.Module):
    """Base of a host's exportable graph: one image (3, H, W), float32 pixels in the model's input format (0-255),
    at the size the model sees (after the config's test resize) -> boxes (K, 4) in that image's pixels (x1, y1,
    x2, y2, clipped to it), scores (K,) and classes (K,).

    Holds the model (in eval mode; it shares its parameters and a host's graph may swap some of its modules for
    trace-friendly ones: build it on a copy) and does what every host does: normalise and pad the image, run the
    backbone, pick and clip the detections. A setting the graph cannot export raises ValueError with the reason.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model.eval()

    def backbone_features(self, image: torch.Tensor):
        """(3, H, W) image -> the decoder's maps (``model.in_features``, each (1, c, H_l, W_l)), the image's (2,)
        int64 (h, w) and its (2,) int64 padded size (a multiple of the backbone's size divisibility)."""
        model = self.model
        size = hw_tensor(image)  # (h, w)
        x = (image - model.pixel_mean) / model.pixel_std
        divisor = max(model.backbone.size_divisibility, 1)
        padded = torch.div(size + divisor - 1, divisor, rounding_mode="floor") * divisor
        x = pad_to_multiple(x, divisor)[None]
        if model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        maps = model.backbone(x)
        return [maps[f] for f in model.in_features], size, padded

    @staticmethod
    def clipped(pixel_boxes: torch.Tensor, whwh: torch.Tensor) -> torch.Tensor:
        """(K, 4) pixel boxes clipped to the (1, 4) image size w, h, w, h (detectron2's ``Boxes.clip``)."""
        return torch.minimum(pixel_boxes.clamp(min=0), whwh[0].to(pixel_boxes.dtype))

    @staticmethod
    def whwh(size: torch.Tensor) -> torch.Tensor:
        """(2,) (h, w) -> (1, 4) float32 (w, h, w, h)."""
        return size.flip(0).repeat(2).to(torch.float32)[None]

    def top_k(self, logits: torch.Tensor, boxes: torch.Tensor, whwh: torch.Tensor, count: int):
        """The top ``count`` of N x K sigmoid scores of (N, K) logits and (N, 4) normalised cxcywh boxes, as
        unclipped pixel boxes (count, 4), scores (count,) and classes (count,)."""
        k = logits.shape[-1]
        scores, index = logits.sigmoid().flatten().topk(count)
        pixel_boxes = cxcywh_to_xyxy(boxes) * whwh
        return pixel_boxes[torch.div(index, k, rounding_mode="floor")], scores, index % k


class DeployableDetector(DetectorGraph):
    """The Sparse R-CNN host's graph (:class:`~recursivedet.modeling.RecursiveDet`): the model's top-K
    detections, K = ``min(detections_per_image, N x classes)``, REGO's when it runs at inference.

    Its :class:`~recursivedet.modeling.RecursiveDecoder` is given the trace-friendly pooling and PE while this
    wrapper lives (build it on a copy); a host on the same decoder (DiffusionDet) derives its graph from this one.
    """

    def __init__(self, model):
        super().__init__(model)
        decoder = model.decoder
        use_traced_pooling(model)
        self.traced_pe = self.dense_pe = None
        if decoder.analytic_pe is not None:
            pe = decoder.analytic_pe
            self.traced_pe = TracedRoIPositionEncoding(pe.pooler, pe.num_feats, pe.temperature, pe.scale)
            decoder.analytic_pe = self.traced_pe
        elif decoder.uses_image_pe:
            self.dense_pe = decoder.analytic_pe = StackedDenseRoIPositionEncoding(decoder)
        if model.detections_per_image is not None:  # else the host selects its detections (DiffusionDet)
            self.num_detections = min(model.detections_per_image, model.num_proposals * self.num_classes)

    @property
    def num_classes(self) -> int:
        return self.model.decoder.stages[0].class_logits.out_features

    def decoder_inputs(self, features, size, padded):
        """(1, 4) whwh and the PE extents of the decoder (None without image PE); gives the graph's PE the maps."""
        model = self.model
        extents = None
        if model.decoder.uses_image_pe:
            extents = [torch.ceil(padded.to(torch.float32) / s)[None] for s in model.strides]
        if self.traced_pe is not None:
            self.traced_pe.map_sizes = map_sizes_of(features)
        if self.dense_pe is not None:
            self.dense_pe.set_features(features, extents)
        return self.whwh(size), extents

    def forward(self, image: torch.Tensor):
        model = self.model
        features, size, padded = self.backbone_features(image)
        whwh, extents = self.decoder_inputs(features, size, padded)
        boxes = model.init_proposal_boxes.weight[None]
        proposal_features = model.init_proposal_features.weight[None]
        if model.rego_at_inference():
            outputs, states = model.decoder(features, boxes, proposal_features, whwh, extents, return_features=True)
            logits, boxes = model.rego(features, model.decoder.pool, outputs[-1][1], states, whwh)[-1][-1]
        else:
            logits, boxes = model.decoder(features, boxes, proposal_features, whwh, extents)[-1]
        picked, scores, classes = self.top_k(logits[0], boxes[0], whwh, self.num_detections)
        return self.clipped(picked, whwh), scores, classes


def use_traced_pooling(model) -> None:
    """Give ``model.decoder`` (a :class:`~recursivedet.modeling.RecursiveDecoder`) the pooling of
    :func:`stacked_roi_align`; ValueError when its pooler has no fixed sampling grid."""
    decoder = model.decoder
    if not fixed_grid_roi_align(decoder.pooler):
        raise ValueError("export needs RoIAlign poolers with a fixed sampling ratio (ROIAlignV2, ratio > 0)")
    decoder.pool = lambda features, pixel_boxes: stacked_roi_align(decoder.pooler, features, pixel_boxes)
