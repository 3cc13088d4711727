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
from detectron2.modeling import Backbone
from detectron2.structures import Boxes, ImageList, Instances
from torch import nn

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.decoder import RecursiveDecoder
from recursivedet.modeling.query_detector import Decoded, QueryDetector
from recursivedet.modeling.rego import RecurrentGlimpseDecoder

from .criterion import DynamicKCriterion
from .diffusion import BoxDiffusion
from .sampling import DDIMSampler
from .time_embedding import TimeEmbedding


class DiffusionDet(QueryDetector):
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
        rego: REGO's :class:`~recursivedet.modeling.rego.RecurrentGlimpseDecoder` after the decoder, in training on
            the corrupted boxes' predictions and at inference at every sampling step (the step's prediction is
            then REGO's last); None or 0 stages: none.
    """

    # Per-stage analysis reads one decoder pass; this host's detections come from sampling over several.
    per_stage_analysis = False

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
        rego: RecurrentGlimpseDecoder | None = None,
    ):
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
            num_proposals=num_proposals,
            deep_supervision=deep_supervision,
            detections_per_image=None,  # the sampler selects the detections
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
        # The official head initialises its time MLP with xavier too.
        for p in self.time_mlp.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.attach_rego(rego)

    def head(self, features, boxes, t, whwh, extents, return_states=False, num_stages=None):
        """The decoder on (B, N, 4) normalised cxcywh boxes at steps t (B,) -> list over stages of (logits
        (B, N, K), boxes (B, N, 4)), and with ``return_states`` the last object features."""
        condition = self.time_mlp(t)
        return self.decoder(
            features, boxes, None, whwh, extents, num_stages, return_features=return_states, condition=condition
        )

    def decode(self, images, feature_maps, num_stages=None, targets=None, return_states=False) -> Decoded:
        """In training, the targets padded to N boxes and corrupted to a random step; otherwise the boxes of
        the sampler's initial noise at t = T - 1 (the first sampling step, which benchmarks time as the head)."""
        features, whwh, extents = self.pooled_features(images, feature_maps)
        if targets is not None:
            boxes, t = self.corrupt(targets)
            boxes = boxes.to(features[0].dtype)  # detectron2 keeps ground-truth boxes in float32 whatever the model
        else:
            generators = self.sampler.generators(range(len(images)))
            noise = self.sampler.draw(generators, self.num_proposals, self.device, features[0].dtype)
            boxes = self.diffusion.to_boxes(noise)
            t = torch.full((len(images),), self.diffusion.timesteps - 1, device=self.device, dtype=torch.int64)
        run = self.head(features, boxes, t, whwh, extents, return_states, num_stages)
        outputs, states = run if return_states else (run, None)
        return Decoded(outputs, states, features, whwh)

    def predict(self, images: ImageList, batched_inputs: list[dict]) -> list[Instances]:
        """DDIM sampling from each image's seeded noise (its ``image_id``, else its index in the batch)."""
        features, whwh, extents = self.pooled_features(images, self.run_backbone(images))
        predictions = self.sample(features, whwh, extents, self.noise_keys(batched_inputs))
        results = []
        detections = self.sampler.detections(predictions, whwh)
        for size, (boxes, scores, labels) in zip(images.image_sizes, detections, strict=True):
            r = Instances(size)
            r.pred_boxes = Boxes(boxes)
            r.scores = scores
            r.pred_classes = labels
            results.append(r)
        return results

    @staticmethod
    def noise_keys(batched_inputs) -> list:
        """Per image, the key of its sampling noise: its ``image_id``, else its index in the batch."""
        return [x.get("image_id", i) for i, x in enumerate(batched_inputs)]

    def corrupt(self, targets: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N, 4) noisy proposal boxes and (B,) steps: GT padded to N, one t ~ U{0..T-1} per image."""
        x0 = torch.stack([self.diffusion.pad_boxes(t["boxes"], self.num_proposals) for t in targets])
        t = torch.randint(0, self.diffusion.timesteps, (len(targets),), device=self.device)
        noise = torch.randn(x0.shape, device=self.device)
        return self.diffusion.corrupt(x0, t, noise), t

    @torch.no_grad()
    def sample(self, features, whwh, extents, keys, draw=None) -> list[tuple]:
        """The DDIM sampling loop: per step, the last stage's (logits (B, N, K), boxes (B, N, 4)), REGO's when it
        runs at inference. ``draw``: the noise in place of the generators of ``keys`` (see
        :meth:`~.sampling.DDIMSampler.run`)."""
        with_rego = self.rego_at_inference()

        def predict(boxes, t):
            steps = torch.full((len(boxes),), t, device=self.device, dtype=torch.int64)
            run = self.head(features, boxes, steps, whwh, extents, with_rego)
            if not with_rego:
                return run[-1]
            return self.refine(Decoded(*run, features, whwh))[-1][-1]

        return self.sampler.run(
            predict, self.diffusion, self.num_proposals, keys, self.device, features[0].dtype, draw=draw
        )
