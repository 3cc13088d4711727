"""The DiffusionDet detector (Chen et al., ICCV 2023; official ``detector.py``) on the library's decoder.

Training: each image's ground-truth boxes are padded to N, corrupted to a random step t
(:class:`~.diffusion.BoxDiffusion`) and refined by the decoder conditioned on t; losses come from the
one-to-many :class:`~.matcher.DynamicKMatcher`. Inference: DDIM sampling from noise (:class:`~.sampling.DDIMSampler`).

The decoder is :class:`~recursivedet.modeling.RecursiveDecoder`, so every RecursiveDet switch (stage sharing,
dynamic-conv passes, box and centerness PEs) applies as on the Sparse R-CNN host. Its stages take the time
embedding as a per-image conditioning (``condition_dim``), which modulates the input of their class and box
branches; the first stage's proposal features are the mean RoI features (no learnable proposals).
"""

import torch
from detectron2.modeling import Backbone, detector_postprocess
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.box_utils import image_whwh, xyxy_to_cxcywh
from recursivedet.modeling.decoder import RecursiveDecoder
from recursivedet.modeling.image_detector import ImageDetector

from .criterion import DynamicKCriterion
from .diffusion import BoxDiffusion
from .sampling import DDIMSampler
from .time_embedding import TimeEmbedding


class DiffusionDet(ImageDetector):
    """Backbone, time embedding, decoder, box diffusion, criterion and DDIM sampler.

    Args:
        backbone: a detectron2 backbone giving ``in_features`` with the decoder's width (R50/R101-FPN p2-p5).
        decoder: the :class:`RecursiveDecoder`; its stages need ``condition_dim`` = the time embedding's width.
        criterion: the :class:`DynamicKCriterion`.
        time_embedding: the global :class:`TimeEmbedding` (one per model, shared by every stage).
        diffusion: the :class:`BoxDiffusion` (T = 1000, signal scale 2).
        sampler: the :class:`DDIMSampler` (steps, eta, renewal, ensemble, NMS, seed).
        in_features: backbone outputs pooled by the decoder, in the pooler's level order.
        num_proposals: N boxes per image (500 in the paper's Table 2).
        deep_supervision: losses on every stage (official) or the last one only.
        pixel_mean, pixel_std, input_format: input normalisation (official: RGB, torchvision statistics).
        channels_last, fold_frozen_batchnorm: as :class:`~recursivedet.modeling.RecursiveDet` (same numbers).
    """

    def __init__(
        self,
        *,
        backbone: Backbone,
        decoder: RecursiveDecoder,
        criterion: DynamicKCriterion,
        time_embedding: TimeEmbedding,
        diffusion: BoxDiffusion,
        sampler: DDIMSampler,
        in_features: list[str] = ("p2", "p3", "p4", "p5"),
        num_proposals: int = 500,
        deep_supervision: bool = True,
        pixel_mean: tuple[float, ...] = (123.675, 116.280, 103.530),
        pixel_std: tuple[float, ...] = (58.395, 57.120, 57.375),
        input_format: str = "RGB",
        channels_last: bool = True,
        fold_frozen_batchnorm: bool = True,
    ):
        if not isinstance(num_proposals, int) or isinstance(num_proposals, bool) or num_proposals < 1:
            raise ConfigValueError(f"model.num_proposals must be a positive integer, got {num_proposals!r}")
        conditions = {s.condition_dim for s in decoder.stages}
        if conditions != {time_embedding.out_dim}:
            raise ConfigValueError(
                f"model.decoder.stage.condition_dim {sorted(conditions)} must equal the time embedding's width "
                f"{time_embedding.out_dim} (model.time_embedding.out_dim)"
            )
        if sampler.steps > diffusion.timesteps:
            raise ConfigValueError(f"model.sampler.steps {sampler.steps} exceeds the {diffusion.timesteps} timesteps")
        super().__init__(
            backbone=backbone,
            dim=decoder.stages[0].dim,
            in_features=in_features,
            pixel_mean=pixel_mean,
            pixel_std=pixel_std,
            input_format=input_format,
            channels_last=channels_last,
            fold_frozen_batchnorm=fold_frozen_batchnorm,
        )
        self.time_mlp = time_embedding
        self.decoder = decoder
        self.criterion = criterion
        self.diffusion = diffusion
        self.sampler = sampler
        self.rego = None  # the analysis tools' interface: no REGO on this host
        self.num_proposals = num_proposals
        self.deep_supervision = deep_supervision
        # The official head initialises its time MLP with xavier too.
        for p in self.time_mlp.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def head(self, features, boxes, t, whwh, extents):
        """The decoder on (B, N, 4) normalised cxcywh boxes at steps t (B,) -> list over stages of (logits
        (B, N, K), boxes (B, N, 4))."""
        return self.decoder(features, boxes, None, whwh, extents, condition=self.time_mlp(t))

    def run_head(self, images: ImageList, feature_maps: dict[str, torch.Tensor]):
        """The decoder of the first sampling step on the backbone's maps (what the analysis tools time as the
        head): the boxes of the sampler's initial noise at t = T - 1; list over stages of (logits, boxes)."""
        features, whwh, extents = self.pooled_features(images, feature_maps)
        generators = self.sampler.generators(range(len(images)))
        noise = self.sampler.draw(generators, self.num_proposals, self.device, features[0].dtype)
        t = torch.full((len(images),), self.diffusion.timesteps - 1, device=self.device, dtype=torch.int64)
        return self.head(features, self.diffusion.to_boxes(noise), t, whwh, extents)

    def forward(self, batched_inputs: list[dict]):
        """detectron2 convention: training returns a loss dict, inference ``[{"instances": ...}]``."""
        images = self.preprocess_image(batched_inputs)
        features, whwh, extents = self.pooled_features(images, self.run_backbone(images))
        if self.training:
            targets = self.prepare_targets([x["instances"].to(self.device) for x in batched_inputs])
            boxes, t = self.corrupt(targets)
            boxes = boxes.to(features[0].dtype)  # detectron2 keeps ground-truth boxes in float32 whatever the model
            return self.losses(self.head(features, boxes, t, whwh, extents), targets)
        results = self.inference(features, whwh, extents, images.image_sizes, self.noise_keys(batched_inputs))
        return [
            {"instances": detector_postprocess(r, x.get("height", s[0]), x.get("width", s[1]))}
            for r, x, s in zip(results, batched_inputs, images.image_sizes, strict=True)
        ]

    @staticmethod
    def noise_keys(batched_inputs) -> list:
        """Per image, the key of its sampling noise: its ``image_id``, else its index in the batch."""
        return [x.get("image_id", i) for i, x in enumerate(batched_inputs)]

    def prepare_targets(self, instances: list[Instances]) -> list[dict]:
        """GT labels and boxes normalised by each image's size, as (cx, cy, w, h)."""
        targets = []
        for inst in instances:
            whwh = image_whwh([inst.image_size], self.device)
            targets.append({"labels": inst.gt_classes, "boxes": xyxy_to_cxcywh(inst.gt_boxes.tensor / whwh)})
        return targets

    def corrupt(self, targets: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 4) noisy proposal boxes and (B,) steps: GT padded to N, one t ~ U{0..T-1} per image."""
        x0 = torch.stack([self.diffusion.pad_boxes(t["boxes"], self.num_proposals) for t in targets])
        t = torch.randint(0, self.diffusion.timesteps, (len(targets),), device=self.device)
        noise = torch.randn(x0.shape, device=self.device)
        return self.diffusion.corrupt(x0, t, noise), t

    def losses(self, outputs, targets) -> dict[str, torch.Tensor]:
        """Losses of the last stage ("loss_cls", ...) and, with deep supervision, of each earlier stage t
        ("loss_cls_{t}"), each stage matched on its own."""
        supervised = range(len(outputs)) if self.deep_supervision else [len(outputs) - 1]
        losses = {}
        for t in supervised:
            suffix = "" if t == len(outputs) - 1 else f"_{t}"
            losses.update({k + suffix: v for k, v in self.criterion(*outputs[t], targets).items()})
        return losses

    @torch.no_grad()
    def sample(self, features, whwh, extents, keys) -> list[tuple]:
        """The DDIM sampling loop: per step, the last stage's (logits (B, N, K), boxes (B, N, 4))."""

        def predict(boxes, t):
            steps = torch.full((len(boxes),), t, device=self.device, dtype=torch.int64)
            return self.head(features, boxes, steps, whwh, extents)[-1]

        return self.sampler.run(predict, self.diffusion, self.num_proposals, keys, self.device, features[0].dtype)

    def inference(self, features, whwh, extents, image_sizes, keys) -> list[Instances]:
        """Detections of each image on its input size (before :func:`detector_postprocess`)."""
        predictions = self.sample(features, whwh, extents, keys)
        results = []
        for size, (boxes, scores, labels) in zip(image_sizes, self.sampler.detections(predictions, whwh), strict=True):
            r = Instances(size)
            r.pred_boxes = Boxes(boxes)
            r.scores = scores
            r.pred_classes = labels
            results.append(r)
        return results
