"""The AdaMixer detector (AdaMixer, CVPR 2022; official ``QueryBased`` with ``InitialQueryGenerator`` and
``AdaMixerDecoder``) on this library: backbone and channel-mapping neck, N queries, the decoder, Hungarian
matching and set losses on every stage (library :class:`~recursivedet.modeling.SetCriterion`), top-k inference.

Queries: N learnable content vectors, layer-normalised without affine parameters, and the position of the whole
image (x, y, z, r) = (w / 2, h / 2, log2 sqrt(w h), log2(h / w)) of each image, not learnable. The official code
keeps these boxes as an N x 4 embedding (normalised (0.5, 0.5, 1, 1)) that no gradient reaches; it is kept
here for its parameter count and checkpoints.
"""

import torch
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn
from torch.nn import functional as F

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.box_utils import cxcywh_to_xyxy, image_whwh, xyxy_to_cxcywh
from recursivedet.modeling.criterion import SetCriterion

from .boxes import xyxy_to_xyzr, xyzr_to_xyxy
from .decoder import AdaMixerDecoder


class AdaMixer(nn.Module):
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
    ):
        super().__init__()
        for key, value in (("num_proposals", num_proposals), ("detections_per_image", detections_per_image)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigValueError(f"model.{key} must be a positive integer, got {value!r}")
        dim = decoder.stages[0].dim
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ConfigValueError(f"model.in_features {missing} are not backbone outputs; it gives {sorted(shapes)}")
        if any(shapes[f].channels != dim for f in in_features):
            raise ConfigValueError(f"backbone channels must equal the decoder width {dim} (model.decoder.stage.dim)")
        self.backbone = backbone
        self.decoder = decoder
        self.criterion = criterion
        self.rego = None  # the analysis tools' interface: no REGO on this host
        self.in_features = list(in_features)
        self.strides = [shapes[f].stride for f in self.in_features]
        self.num_proposals = num_proposals
        self.deep_supervision = deep_supervision
        self.detections_per_image = detections_per_image
        self.input_format = input_format
        self.channels_last = channels_last
        self.init_proposal_boxes = nn.Embedding(num_proposals, 4)
        self.init_proposal_features = nn.Embedding(num_proposals, dim)
        with torch.no_grad():
            self.init_proposal_boxes.weight[:, :2] = 0.5
            self.init_proposal_boxes.weight[:, 2:] = 1.0
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs) -> ImageList:
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def run_backbone(self, images: ImageList) -> dict[str, torch.Tensor]:
        """The backbone's (and neck's) output maps."""
        tensor = images.tensor.contiguous(memory_format=torch.channels_last) if self.channels_last else images.tensor
        return self.backbone(tensor)

    def run_head(self, images: ImageList, feature_maps: dict[str, torch.Tensor], num_stages: int | None = None):
        """Everything after the backbone up to the stage outputs (the analysis tools' timed "head"): list over
        stages of (logits (B, N, K), positions (B, N, 4) (x, y, z, r))."""
        whwh = image_whwh(images.image_sizes, self.device)
        content, xyzr = self.initial_queries(whwh)
        layout = self.decoder.feature_memory_format
        features = [feature_maps[f].contiguous(memory_format=layout) for f in self.in_features]
        return self.decoder(features, self.strides, content, xyzr, whwh, num_stages)

    def initial_queries(self, whwh: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, c) layer-normalised contents and (B, N, 4) detached positions of the images (B, 4) whwh."""
        boxes = cxcywh_to_xyxy(self.init_proposal_boxes.weight)[None] * whwh[:, None, :]
        content = self.init_proposal_features.weight
        content = F.layer_norm(content, content.shape[-1:])[None].expand(len(whwh), -1, -1)
        return content, xyxy_to_xyzr(boxes).detach()

    def run_decoder(self, images: ImageList, num_stages: int | None = None):
        """Backbone + decoder -> list over stages of (logits (B, N, K), boxes (B, N, 4) normalised cxcywh), and
        the (B, 4) image sizes whwh."""
        whwh = image_whwh(images.image_sizes, self.device)
        outputs = self.run_head(images, self.run_backbone(images), num_stages)
        return [(logits, xyxy_to_cxcywh(xyzr_to_xyxy(b) / whwh[:, None, :])) for logits, b in outputs], whwh

    def stage_outputs(self, images: ImageList, num_stages: int | None = None) -> dict[str, tuple]:
        """``{"stage t": (logits (B, N, K), boxes (B, N, 4) normalised cxcywh)}`` for t = 1..num_stages (None: the
        decoder's ``inference_stages``), as the library's ``RecursiveDet.stage_outputs`` (per-stage analysis)."""
        outputs, _ = self.run_decoder(images, num_stages)
        return {f"stage {t + 1}": output for t, output in enumerate(outputs)}

    def forward(self, batched_inputs: list[dict]):
        """detectron2 convention: training returns a loss dict, inference ``[{"instances": ...}]``."""
        images = self.preprocess_image(batched_inputs)
        outputs, _ = self.run_decoder(images)
        if self.training:
            targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs])
            return self.losses(outputs, targets)
        results = self.inference(*outputs[-1], images.image_sizes)
        return [
            {"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
            for r, x, s in zip(results, batched_inputs, images.image_sizes, strict=True)
        ]

    def prepare_targets(self, instances: list[Instances]) -> list[dict]:
        """GT labels and boxes normalised by each image's size, as (cx, cy, w, h)."""
        targets = []
        for inst in instances:
            whwh = image_whwh([inst.image_size], self.device)
            targets.append({"labels": inst.gt_classes, "boxes": xyxy_to_cxcywh(inst.gt_boxes.tensor / whwh)})
        return targets

    def losses(self, outputs, targets) -> dict[str, torch.Tensor]:
        """Losses of the last stage ("loss_cls", "loss_bbox", "loss_giou") and, with deep supervision, of each
        earlier stage t ("loss_cls_{t}", ...), each stage matched on its own (official: weight 1 each)."""
        num_boxes = self.criterion.num_boxes(targets, self.device)
        supervised = range(len(outputs)) if self.deep_supervision else [len(outputs) - 1]
        losses = {}
        for t in supervised:
            suffix = "" if t == len(outputs) - 1 else f"_{t}"
            losses.update({k + suffix: v for k, v in self.criterion(*outputs[t], targets, num_boxes).items()})
        return losses

    def inference(self, logits, boxes, image_sizes) -> list[Instances]:
        """Top-k over queries x classes of the sigmoid scores (official: k = N, no NMS).

        Args:
            logits: (B, N, K); boxes: (B, N, 4) normalised cxcywh; image_sizes: B (h, w) input sizes.
        """
        b, n, k = logits.shape
        scores, index = logits.sigmoid().flatten(1).topk(min(self.detections_per_image, n * k), dim=1)
        pixel_boxes = cxcywh_to_xyxy(boxes) * image_whwh(image_sizes, self.device)[:, None, :]
        picked = torch.gather(pixel_boxes, 1, (index // k)[..., None].expand(-1, -1, 4))
        results = []
        for i, size in enumerate(image_sizes):
            r = Instances(size)
            r.pred_boxes = Boxes(picked[i])
            r.scores = scores[i]
            r.pred_classes = index[i] % k
            results.append(r)
        return results
