"""The RecursiveDet meta-architecture (Sparse R-CNN host): backbone, learnable proposals, decoder, optional
REGO refinement, criterion and inference."""

import math

import torch
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from recursivedet.errors import ConfigValueError

from .box_utils import cxcywh_to_xyxy, image_whwh, xyxy_to_cxcywh
from .criterion import SetCriterion
from .decoder import RecursiveDecoder
from .image_detector import ImageDetector
from .rego import RecurrentGlimpseDecoder


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
class RecursiveDet(ImageDetector):
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
        for key, value in (("num_proposals", num_proposals), ("detections_per_image", detections_per_image)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigValueError(f"model.{key} must be a positive integer, got {value!r}")
        if proposal_box_init not in ("image", "grid"):
            raise ConfigValueError(f"model.proposal_box_init must be 'image' or 'grid', got {proposal_box_init!r}")
        dim = decoder.stages[0].dim
        super().__init__(
            backbone=backbone,
            dim=dim,
            in_features=in_features,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            input_format=input_format,
            channels_last=channels_last,
            fold_frozen_batchnorm=fold_frozen_batchnorm,
        )
        self.decoder = decoder
        self.criterion = criterion
        self.num_proposals = num_proposals
        self.deep_supervision = deep_supervision
        self.detections_per_image = detections_per_image
        self.init_proposal_features = nn.Embedding(num_proposals, dim)
        self.init_proposal_boxes = nn.Embedding(num_proposals, 4)
        with torch.no_grad():
            self.init_proposal_boxes.weight.copy_(initial_boxes(proposal_box_init, num_proposals))
        if rego is not None and rego.num_stages and rego.dim != dim:
            raise ConfigValueError(f"REGO's width {rego.dim} must equal the decoder width {dim} (model.rego.dim)")
        self.rego = rego if rego is not None and rego.num_stages else None

    def forward(self, batched_inputs: list[dict]):
        """detectron2 convention: training returns a loss dict, inference ``[{"instances": ...}]``."""
        images = self.preprocess_image(batched_inputs)
        outputs, rego_outputs = self.run_detector(images)
        if self.training:
            targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs])
            return self.losses(outputs, targets, rego_outputs)
        logits, boxes = rego_outputs[-1][-1] if rego_outputs else outputs[-1]
        results = self.inference(logits, boxes, images.image_sizes)
        return [
            {"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
            for r, x, s in zip(results, batched_inputs, images.image_sizes, strict=True)
        ]

    def run_decoder(self, images: ImageList, num_stages: int | None = None):
        """Backbone + decoder -> list over stages of (logits (B, N, K), boxes (B, N, 4) normalised)."""
        return self.run_detector(images, num_stages, with_rego=False)[0]

    def run_detector(self, images: ImageList, num_stages: int | None = None, with_rego: bool | None = None):
        """Backbone, decoder and REGO.

        Args:
            num_stages: run only the first decoder stages.
            with_rego: run REGO; None = when configured, in training always and at inference unless
                ``rego.at_inference`` is off (REGO Appendix A.2, Table 4).
        Returns:
            the decoder's list over stages of (logits (B, N, K), boxes (B, N, 4) normalised), and REGO's list
            over its stages of lists over its decoder layers of (logits, boxes); the latter empty when REGO
            does not run.
        """
        if with_rego is None:
            with_rego = self.rego is not None and (self.training or self.rego.at_inference)
        features, boxes, proposal_features, whwh, extents = self.decoder_inputs(images, self.run_backbone(images))
        if not with_rego:
            return self.decoder(features, boxes, proposal_features, whwh, extents, num_stages), []
        outputs, states = self.decoder(
            features, boxes, proposal_features, whwh, extents, num_stages, return_features=True
        )
        # REGO Sec. 4.1: its first stage starts from the decoder's last boxes O_box(0) and states H_dec(0).
        return outputs, self.rego(features, self.decoder.pool, outputs[-1][1], states, whwh)

    def stage_outputs(self, images: ImageList, num_stages: int | None = None) -> dict[str, tuple]:
        """Every stage's predictions, for per-stage analysis (paper Fig. 4, REGO Fig. 4 and Appendix Table 4).

        Returns:
            ``{"stage t": (logits (B, N, K), boxes (B, N, 4) normalised cxcywh)}`` for t = 1..num_stages (None:
            the decoder's ``inference_stages``), then ``{"rego k": ...}`` for REGO's stages, run on the last of
            them, when the model has REGO (whatever ``rego.at_inference`` says).
        """
        outputs, rego_outputs = self.run_detector(images, num_stages, with_rego=self.rego is not None)
        named = {f"stage {t + 1}": output for t, output in enumerate(outputs)}
        named.update({f"rego {k + 1}": layers[-1] for k, layers in enumerate(rego_outputs)})
        return named

    def decoder_inputs(self, images: ImageList, feature_maps: dict[str, torch.Tensor]):
        """The decoder's positional arguments: FPN maps in pooler order (in the decoder's
        ``feature_memory_format``), initial boxes (B, N, 4) and proposal features (B, N, c), image sizes whwh
        (B, 4) and the PE extents (or None)."""
        features, whwh, extents = self.pooled_features(images, feature_maps)
        b = len(images)
        boxes = self.init_proposal_boxes.weight[None].expand(b, -1, -1)
        proposal_features = self.init_proposal_features.weight[None].expand(b, -1, -1)
        return features, boxes, proposal_features, whwh, extents

    def run_head(self, images: ImageList, feature_maps: dict[str, torch.Tensor]):
        """The decoder (without REGO) on the backbone's maps: list over stages of (logits, boxes)."""
        return self.decoder(*self.decoder_inputs(images, feature_maps))

    def prepare_targets(self, instances: list[Instances]) -> list[dict]:
        """GT boxes normalised by each image's size, as (cx, cy, w, h)."""
        targets = []
        for inst in instances:
            whwh = image_whwh([inst.image_size], self.device)
            targets.append({"labels": inst.gt_classes, "boxes": xyxy_to_cxcywh(inst.gt_boxes.tensor / whwh)})
        return targets

    def losses(self, outputs, targets, rego_outputs=()) -> dict[str, torch.Tensor]:
        """Losses of the last stage ("loss_cls", ...) and, with deep supervision, of every earlier stage
        t ("loss_cls_{t}", t = 0..T-2): the set of keys follows the number of stages.

        Each REGO stage k is matched and supervised on its own with the same weights (as in the official REGO
        code): "loss_cls_rego{k}", ... on its output and, with ``rego.aux_losses``, "loss_cls_rego{k}_{l}" on
        its earlier decoder layers l (REGO Sec. 4.3).
        """
        num_boxes = self.criterion.num_boxes(targets, self.device)
        supervised = range(len(outputs)) if self.deep_supervision else [len(outputs) - 1]
        predictions = {("" if t == len(outputs) - 1 else f"_{t}"): outputs[t] for t in supervised}
        for k, layers in enumerate(rego_outputs):
            last = len(layers) - 1
            for layer in range(last + 1) if self.rego.aux_losses else [last]:
                predictions[f"_rego{k}" if layer == last else f"_rego{k}_{layer}"] = layers[layer]
        losses = {}
        for suffix, prediction in predictions.items():
            stage_losses = self.criterion(*prediction, targets, num_boxes)
            losses.update({k + suffix: v for k, v in stage_losses.items()})
        return losses

    def inference(self, logits, boxes, image_sizes) -> list[Instances]:
        """Top-k over proposals x classes with sigmoid scores, for all images at once.

        Args:
            logits: (B, N, K); boxes: (B, N, 4) normalised cxcywh; image_sizes: B (h, w) input sizes.
        """
        b, n, k = logits.shape
        scores, index = logits.sigmoid().flatten(1).topk(min(self.detections_per_image, n * k), dim=1)
        labels = index % k
        pixel_boxes = cxcywh_to_xyxy(boxes) * image_whwh(image_sizes, self.device)[:, None, :]
        picked = torch.gather(pixel_boxes, 1, (index // k)[..., None].expand(-1, -1, 4))
        results = []
        for i, size in enumerate(image_sizes):
            r = Instances(size)
            r.pred_boxes = Boxes(picked[i])
            r.scores = scores[i]
            r.pred_classes = labels[i]
            results.append(r)
        return results
