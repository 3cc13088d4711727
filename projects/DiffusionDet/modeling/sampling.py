"""DDIM sampling of DiffusionDet (official ``ddim_sample``), correct for any batch size and number of steps.

Per step: the head predicts x0 from the current noisy boxes and step t; the DDIM update moves the signal to
t_next; box renewal keeps, per image, the boxes whose best class score is above the threshold and replaces the
others with fresh noise; with more than one step, each step's top-N detections of each image are ensembled and
merged by per-class NMS.

The official code keeps the renewal mask of image 0 for every image, returns only the first image's
detections and fails for batches above 1 with several steps; here masks, ensembles, NMS and image sizes are per
image. It also leaves the last step's predictions out of the ensemble: ``ensemble_last_step=False`` reproduces
that, the default includes them. The noise of each image comes from its own generator seeded by (``seed``, the
image's ``image_id``), so an image's detections do not depend on the batch it is in, and evaluation repeats.
"""

import zlib

import torch
from torchvision.ops import batched_nms

from recursivedet.errors import ConfigValueError
from recursivedet.modeling.box_utils import cxcywh_to_xyxy

from .diffusion import BoxDiffusion, ddim_time_pairs


class DDIMSampler:
    """Settings and loop of DDIM sampling.

    Args:
        steps: DDIM steps S (official SAMPLE_STEP, 1 by default; 1 <= S <= T).
        eta: DDIM's eta in [0, 1] (official 1: stochastic; 0: deterministic updates).
        box_renewal: replace low-scoring boxes with noise between steps (official on).
        renewal_threshold: a box is kept when its best sigmoid class score is above this (0.5).
        ensemble: with S > 1, merge the detections of the steps (official on); off: the last step's only.
        ensemble_last_step: include the last step in the ensemble (False: the official code, which leaves it out).
        nms_threshold: IoU of the per-class NMS on each image's detections (0.5); None: no NMS.
        seed: seed of the sampling noise.
    """

    def __init__(
        self,
        steps: int = 1,
        eta: float = 1.0,
        box_renewal: bool = True,
        renewal_threshold: float = 0.5,
        ensemble: bool = True,
        ensemble_last_step: bool = True,
        nms_threshold: float | None = 0.5,
        seed: int = 0,
    ):
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigValueError(f"model.sampler.steps (DDIM sampling steps) must be an integer >= 1, got {steps!r}")
        if not 0.0 <= eta <= 1.0:
            raise ConfigValueError(f"model.sampler.eta (DDIM eta) must be in [0, 1], got {eta}")
        if not 0.0 <= renewal_threshold <= 1.0:
            raise ConfigValueError(f"model.sampler.renewal_threshold must be in [0, 1], got {renewal_threshold}")
        if nms_threshold is not None and not 0.0 <= nms_threshold <= 1.0:
            raise ConfigValueError(f"model.sampler.nms_threshold must be in [0, 1] or None, got {nms_threshold}")
        self.steps, self.eta = steps, eta
        self.box_renewal, self.renewal_threshold = box_renewal, renewal_threshold
        self.ensemble, self.ensemble_last_step = ensemble, ensemble_last_step
        self.nms_threshold = nms_threshold
        self.seed = seed

    def generators(self, keys) -> list[torch.Generator]:
        """One CPU generator per image, seeded by (seed, key); key = the image's ``image_id`` (else its index)."""
        return [torch.Generator().manual_seed(zlib.crc32(f"{self.seed}/{key}".encode())) for key in keys]

    @staticmethod
    def draw(generators, num: int, device, dtype) -> torch.Tensor:
        """(B, num, 4) standard normal noise, image b from generator b (drawn in float32 on the CPU)."""
        return torch.stack([torch.randn(num, 4, generator=g) for g in generators]).to(device=device, dtype=dtype)

    def run(self, predict, diffusion: BoxDiffusion, num_proposals: int, keys, device, dtype=torch.float32, draw=None):
        """The sampling loop.

        Args:
            predict: (boxes (B, N, 4) normalised cxcywh, t) -> last-stage (logits (B, N, K), boxes (B, N, 4)).
            keys: per image, the key of its noise generator.
            device, dtype: of the boxes (the model's).
            draw: () -> the next (B, N, 4) standard normal noise, in place of the generators of ``keys`` (an
                exported graph's noise, fixed in advance: ``projects/DiffusionDet/deploy.py``).
        Returns:
            per step, the (logits, boxes) that ``predict`` gave.
        """
        if self.steps > diffusion.timesteps:
            raise ConfigValueError(f"model.sampler.steps {self.steps} exceeds the {diffusion.timesteps} timesteps")
        if draw is None:
            generators = self.generators(keys)

            def draw():
                return self.draw(generators, num_proposals, device, dtype)

        x = draw()
        positions = torch.arange(num_proposals, device=device)
        predictions = []
        for t, t_next in ddim_time_pairs(self.steps, diffusion.timesteps):
            logits, boxes = predict(diffusion.to_boxes(x), t)
            predictions.append((logits, boxes))
            if t_next < 0:
                break
            x0 = diffusion.to_signal(boxes).clamp(-diffusion.scale, diffusion.scale)
            eps = diffusion.noise_from_start(x, t, x0)
            if self.box_renewal:
                keep = logits.sigmoid().amax(-1) > self.renewal_threshold  # (B, N)
                # kept boxes first, in their order (as the official code concatenates them), then fresh noise
                order = torch.sort((~keep).to(torch.uint8), dim=1, stable=True).indices[..., None].expand(-1, -1, 4)
                x0, eps = x0.gather(1, order), eps.gather(1, order)
            x = diffusion.ddim_step(x0, eps, t, t_next, self.eta, draw())
            if self.box_renewal:
                fresh = draw()
                kept = positions[None, :, None] < keep.sum(1)[:, None, None]
                x = torch.where(kept, x, fresh)
        return predictions

    def ensemble_steps(self, predictions: list) -> list:
        """The steps whose detections are merged: all (default), all but the last (official), or the last one
        (one step, or ``ensemble`` off)."""
        if not self.ensemble or len(predictions) == 1:
            return predictions[-1:]
        return predictions if self.ensemble_last_step else predictions[:-1]

    def detections(self, predictions: list, whwh: torch.Tensor) -> list[tuple[torch.Tensor, ...]]:
        """Per image (boxes (D, 4) pixel xyxy, scores (D,), labels (D,)): each used step's top-N over N x K
        sigmoid scores, concatenated over steps, then per-class NMS.

        Args:
            predictions: from :meth:`run`. whwh: (B, 4) each image's (w, h, w, h).
        """
        per_image = [[] for _ in range(len(whwh))]
        for logits, boxes in self.ensemble_steps(predictions):
            b, n, k = logits.shape
            scores, index = logits.sigmoid().flatten(1).topk(n, dim=1)
            pixel = cxcywh_to_xyxy(boxes.to(logits.dtype)) * whwh[:, None, :]
            picked = pixel.gather(1, (index // k)[..., None].expand(-1, -1, 4))
            for i in range(b):
                per_image[i].append((picked[i], scores[i], index[i] % k))
        results = []
        for parts in per_image:
            boxes, scores, labels = (torch.cat(x) for x in zip(*parts, strict=True))
            if self.nms_threshold is not None:
                keep = batched_nms(boxes, scores, labels, self.nms_threshold)
                boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            results.append((boxes, scores, labels))
        return results
