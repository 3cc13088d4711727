"""DiffusionDet's exportable graph (``python -m recursivedet.deploy``): DDIM sampling from fixed noise.

The eager model draws its noise from a generator seeded by (``model.sampler.seed``, the image's key); a graph has no
generator. The graph holds, as a constant, every draw that the sampling loop makes for the key 0 (the key of an
image without ``image_id``, alone in its batch): the initial boxes and, between steps, the DDIM noise and the boxes
of box renewal. Its detections are then those of the PyTorch model on that image, and the same image gives the same
detections every time. The steps, box renewal (a stable sort and a ``where``: no data-dependent shapes), the
ensemble of the steps and the per-class NMS (``torchvision.ops.batched_nms``, whose output size depends on the data)
are all in the graph.
"""

import torch
from torchvision.ops import batched_nms

from recursivedet.deploy.graph import DeployableDetector

from .modeling.diffusion import ddim_time_pairs

NOISE_KEY = 0  # the key of an image without image_id, alone in its batch (DiffusionDet.noise_keys)


def sampling_noise(sampler, num_proposals: int) -> torch.Tensor:
    """(D, N, 4) float32: the D standard-normal draws of :meth:`~.sampling.DDIMSampler.run` for the key 0, in
    the order it draws them (initial boxes; then per step but the last, the DDIM noise and, with box renewal,
    the fresh boxes)."""
    (generator,) = sampler.generators([NOISE_KEY])
    per_step = 2 if sampler.box_renewal else 1
    draws = 1 + per_step * (sampler.steps - 1)
    return torch.stack([torch.randn(num_proposals, 4, generator=generator) for _ in range(draws)])


class DiffusionDetGraph(DeployableDetector):
    """One image (3, H, W) -> the DiffusionDet model's detections (D, 4) pixel boxes clipped to the image,
    scores (D,) and classes (D,), D depending on the NMS: DDIM sampling with the model's sampler settings
    (steps, eta, box renewal, ensemble, NMS) and REGO when it runs at inference, from the noise of
    :func:`sampling_noise`."""

    def __init__(self, model):
        super().__init__(model)
        self.register_buffer("noise", sampling_noise(model.sampler, model.num_proposals), persistent=False)
        # The step pairs as plain numbers before torch.export traces the sampling (it would trace their linspace).
        ddim_time_pairs(model.sampler.steps, model.diffusion.timesteps)

    def sample(self, features, whwh, extents) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The model's DDIM sampling of one image on the held noise: per step, (logits (1, N, K), boxes (1, N, 4))
        of the last stage, REGO's when it runs at inference."""
        draws = iter(self.noise.to(features[0].dtype)[:, None])  # each (1, N, 4)
        return self.model.sample(features, whwh, extents, [NOISE_KEY], draw=lambda: next(draws))

    def forward(self, image: torch.Tensor):
        model = self.model
        features, size, padded = self.backbone_features(image)
        whwh, extents = self.decoder_inputs(features, size, padded)
        parts = []
        for logits, boxes in model.sampler.ensemble_steps(self.sample(features, whwh, extents)):
            parts.append(self.top_k(logits[0], boxes[0].to(logits.dtype), whwh, model.num_proposals))
        boxes, scores, classes = (torch.cat(x) for x in zip(*parts, strict=True))
        if model.sampler.nms_threshold is not None:
            keep = batched_nms(boxes, scores, classes, model.sampler.nms_threshold)
            boxes, scores, classes = boxes[keep], scores[keep], classes[keep]
        return self.clipped(boxes, whwh), scores, classes
