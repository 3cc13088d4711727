"""The host contract: what every query-based detector of this project (Sparse R-CNN / RecursiveDet, DiffusionDet,
AdaMixer) shares, written once.

:class:`QueryDetector` owns ``forward`` (detectron2's convention), the input normalisation and padding, the
backbone (channels-last, frozen batch norms folded), the targets, the deep-supervision loss names, the top-k
inference, per-stage outputs for analysis, the head that benchmarks time, and a slot for REGO's refinement. A
host supplies its queries and decoder through one method, :meth:`QueryDetector.decode`, as detectron2's
``DenseDetector`` leaves its head to subclasses.
"""

from dataclasses import dataclass

import torch
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from recursivedet.errors import ConfigValueError

from .backbone.folded_norm import fold_frozen_batchnorm as fold_frozen_bn
from .box_utils import cxcywh_to_xyxy, image_whwh, xyxy_to_cxcywh


def check_positive_int(key: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigValueError(f"model.{key} must be a positive integer, got {value!r}")


@dataclass
class Decoded:
    """One run of a host's decoder.

    Attributes:
        outputs: list over stages of (class logits (B, N, K), boxes (B, N, 4) normalised cxcywh).
        states: (B, N, c) the last stage's object features (REGO's H_dec(0)); None unless asked for.
        features: the maps the decoder read, in its level order (REGO's glimpses come from them).
        whwh: (B, 4) image sizes (w, h, w, h) in pixels.
    """

    outputs: list
    states: torch.Tensor | None
    features: list
    whwh: torch.Tensor


class QueryDetector(nn.Module):
    """Base of the hosts' detectors. Subclasses register their modules after calling ``__init__`` (the backbone
    comes first in parameter order, and with it in the optimizer's and the checkpoint's), then call
    :meth:`attach_rego` last, and implement :meth:`decode`.

    A host may also override :meth:`predict` (DiffusionDet samples instead of decoding once) and
    :meth:`glimpse_pool` (a host whose decoder has no RoI pooler).

    Args:
        backbone: a detectron2 backbone giving ``in_features`` with ``dim`` channels each.
        dim: the decoder's width.
        in_features: backbone outputs read by the decoder, in its level order.
        num_proposals: N queries per image.
        deep_supervision: losses on every stage (all hosts' official setting) or on the last one only.
        detections_per_image: top-k over queries x classes at inference; None for a host that selects its own.
        pixel_mean, pixel_std: per-channel normalisation in the input format's channel order.
        input_format: "RGB" (the official recipes, torchvision ImageNet statistics) or "BGR".
        channels_last: run the backbone in channels-last memory format (its convolutions are then faster on
            CPUs and on GPUs with tensor cores); same results up to float rounding.
        fold_frozen_batchnorm: apply the backbone's frozen batch norms as part of the convolutions before them
            (:mod:`~recursivedet.modeling.backbone.folded_norm`; same parameters, same results up to rounding).
    """

    per_stage_analysis = True
    """Whether :meth:`stage_outputs` shows the model's predictions stage by stage (the study's per-stage curves)."""

    def __init__(
        self,
        *,
        backbone: Backbone,
        dim: int,
        in_features,
        num_proposals: int,
        deep_supervision: bool,
        detections_per_image: int | None,
        pixel_mean,
        pixel_std,
        input_format: str,
        channels_last: bool,
        fold_frozen_batchnorm: bool,
    ):
        super().__init__()
        check_positive_int("num_proposals", num_proposals)
        if detections_per_image is not None:
            check_positive_int("detections_per_image", detections_per_image)
        if len(pixel_mean) != len(pixel_std) or any(s <= 0 for s in pixel_std):
            raise ConfigValueError(
                f"model.pixel_mean {list(pixel_mean)} and model.pixel_std {list(pixel_std)} need one value per "
                "channel, pixel_std positive ones"
            )
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ConfigValueError(f"model.in_features {missing} are not backbone outputs; it gives {sorted(shapes)}")
        widths = {f: shapes[f].channels for f in in_features}
        if any(c != dim for c in widths.values()):
            raise ConfigValueError(
                f"backbone channels {widths} must equal the decoder width {dim} (model.decoder.stage.dim)"
            )
        self.backbone = backbone
        self.dim = dim
        self.in_features = list(in_features)
        self.strides = [shapes[f].stride for f in self.in_features]
        self.num_proposals = num_proposals
        self.deep_supervision = deep_supervision
        self.detections_per_image = detections_per_image
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)
        self.channels_last = channels_last
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if fold_frozen_batchnorm:
            fold_frozen_bn(self.backbone)
        self.rego = None

    def attach_rego(self, rego) -> None:
        """REGO's slot (:class:`~recursivedet.modeling.rego.RecurrentGlimpseDecoder`), run after the decoder on
        its last boxes and object features; None or 0 stages: none. Registered last, so that its parameters
        follow the host's."""
        if rego is not None and rego.num_stages and rego.dim != self.dim:
            raise ConfigValueError(f"REGO's width {rego.dim} must equal the decoder width {self.dim} (model.rego.dim)")
        self.rego = rego if rego is not None and rego.num_stages else None

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    # ---- what a host supplies --------------------------------------------------------------------------------

    def decode(
        self,
        images: ImageList,
        feature_maps: dict[str, torch.Tensor],
        num_stages: int | None = None,
        targets: list[dict] | None = None,
        return_states: bool = False,
    ) -> Decoded:
        """The host's queries through its decoder.

        Args:
            images: the preprocessed batch; feature_maps: the backbone's outputs.
            num_stages: run only the first stages (None: the decoder's own count for training or inference).
            targets: in training, :meth:`prepare_targets` of the batch (a host whose queries depend on them).
            return_states: also give the last object features (for REGO).
        """
        raise NotImplementedError

    # ---- shared --------------------------------------------------------------------------------------------

    def preprocess_image(self, batched_inputs) -> ImageList:
        """Normalised images, padded to the backbone's size divisibility."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(
            images, self.backbone.size_divisibility, padding_constraints=self.backbone.padding_constraints
        )

    def run_backbone(self, images: ImageList) -> dict[str, torch.Tensor]:
        """The backbone's output maps, in the memory format of ``channels_last``."""
        if self.channels_last:
            return self.backbone(images.tensor.contiguous(memory_format=torch.channels_last))
        return self.backbone(images.tensor)

    def position_extents(self, image_sizes) -> list[torch.Tensor]:
        """Per level, (B, 2) height and width in cells over which each image's PE is normalised: the
        image's own padded size, so that batching does not change an image's encoding (one image alone is
        the official code's setting, where the PE spans the whole padded map)."""
        sizes = torch.as_tensor([list(s) for s in image_sizes], dtype=torch.float32, device=self.device)
        divisor = self.backbone.size_divisibility
        if divisor > 1:
            sizes = torch.ceil(sizes / divisor) * divisor
        return [torch.ceil(sizes / s) for s in self.strides]

    def pooled_features(self, images: ImageList, feature_maps: dict[str, torch.Tensor]):
        """What the decoder reads: the ``in_features`` maps in its level order (in the decoder's
        ``feature_memory_format``), the image sizes whwh (B, 4) and the PE extents (None when the decoder uses
        no image PE)."""
        layout = self.decoder.feature_memory_format
        features = [feature_maps[f].contiguous(memory_format=layout) for f in self.in_features]
        extents = self.position_extents(images.image_sizes) if getattr(self.decoder, "uses_image_pe", False) else None
        return features, image_whwh(images.image_sizes, self.device), extents

    def glimpse_pool(self, features, pixel_boxes: torch.Tensor) -> torch.Tensor:
        """(B * N, R * R, c) RoI features of (B, N, 4) pixel boxes, from which REGO takes its glimpses: the
        decoder's own pooler."""
        return self.decoder.pool(features, pixel_boxes)

    def refine(self, decoded: Decoded) -> list:
        """REGO's stages on a decoder run (Sec. 4.1: its first stage starts from the decoder's last boxes
        O_box(0) and states H_dec(0)): list over its stages of lists over its layers of (logits, boxes)."""
        return self.rego(decoded.features, self.glimpse_pool, decoded.outputs[-1][1], decoded.states, decoded.whwh)

    def rego_at_inference(self) -> bool:
        return self.rego is not None and self.rego.at_inference

    def run_decoder(self, images: ImageList, num_stages: int | None = None) -> list:
        """Backbone + decoder -> list over stages of (logits (B, N, K), boxes (B, N, 4) normalised cxcywh)."""
        return self.run_detector(images, num_stages, with_rego=False)[0]

    def run_detector(
        self,
        images: ImageList,
        num_stages: int | None = None,
        with_rego: bool | None = None,
        targets: list[dict] | None = None,
    ):
        """Backbone, decoder and REGO.

        Args:
            num_stages: run only the first decoder stages.
            with_rego: run REGO; None = when configured, in training always and at inference unless
                ``rego.at_inference`` is off (REGO Appendix A.2, Table 4).
            targets: the training targets (see :meth:`decode`).
        Returns:
            the decoder's list over stages of (logits (B, N, K), boxes (B, N, 4) normalised), and REGO's list
            over its stages of lists over its decoder layers of (logits, boxes); the latter empty when REGO
            does not run.
        """
        if with_rego is None:
            with_rego = self.rego is not None and (self.training or self.rego.at_inference)
        decoded = self.decode(images, self.run_backbone(images), num_stages, targets, return_states=with_rego)
        return decoded.outputs, (self.refine(decoded) if with_rego else [])

    def forward(self, batched_inputs: list[dict]):
        """detectron2 convention: training returns a loss dict, inference ``[{"instances": ...}]``."""
        images = self.preprocess_image(batched_inputs)
        if self.training:
            targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs])
            outputs, rego_outputs = self.run_detector(images, targets=targets)
            return self.losses(outputs, targets, rego_outputs)
        results = self.predict(images, batched_inputs)
        return [
            {"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
            for r, x, s in zip(results, batched_inputs, images.image_sizes, strict=True)
        ]

    def predict(self, images: ImageList, batched_inputs: list[dict]) -> list[Instances]:
        """Detections of each image on its input size (before :func:`detector_postprocess`): the top-k of the
        last stage, REGO's when it runs at inference."""
        outputs, rego_outputs = self.run_detector(images)
        logits, boxes = rego_outputs[-1][-1] if rego_outputs else outputs[-1]
        return self.inference(logits, boxes, images.image_sizes)

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

    def run_head(self, images: ImageList, feature_maps: dict[str, torch.Tensor]):
        """Everything after the backbone that one inference pass of the decoder runs (what benchmarks time as
        the head), without REGO: list over stages of (logits, boxes)."""
        return self.decode(images, feature_maps).outputs

    def prepare_targets(self, instances: list[Instances]) -> list[dict]:
        """GT labels and boxes normalised by each image's size, as (cx, cy, w, h)."""
        targets = []
        for inst in instances:
            whwh = image_whwh([inst.image_size], self.device)
            targets.append({"labels": inst.gt_classes, "boxes": xyxy_to_cxcywh(inst.gt_boxes.tensor / whwh)})
        return targets

    def losses(self, outputs, targets, rego_outputs=()) -> dict[str, torch.Tensor]:
        """Losses of the last stage ("loss_cls", ...) and, with deep supervision, of every earlier stage
        t ("loss_cls_{t}", t = 0..T-2): the set of keys follows the number of stages; each stage is matched on
        its own.

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
        """Top-k over queries x classes with sigmoid scores, for all images at once (no NMS).

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
