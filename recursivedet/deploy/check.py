"""Checking an exported model against the eager PyTorch model on the same images.

The reference is the host's model itself (its own preprocessing, backbone, decoder with the fast eager paths,
REGO, and its selection of the detections: top-k, or DiffusionDet's sampling and NMS), with boxes clipped to the
image as detectron2 does. The exported model must give the same detections, paired one to one (two detections
whose scores differ by less than the export's rounding may swap ranks): the same classes, and boxes and scores
within the stated tolerances. Sizes other than the one the model was exported at are part of the check (the images
are run at their own sizes, and each also at a second, distorted size).
"""

from dataclasses import dataclass, field

import torch
from scipy.optimize import linear_sum_assignment
from torch.nn import functional as F

from .formats import Runner


@torch.no_grad()
def reference(model, image: torch.Tensor):
    """The eager model's detections (boxes clipped to the image, scores, classes) of one (3, H, W) image, alone
    in its batch and without an ``image_id`` (DiffusionDet then samples from the noise its exported graph holds)."""
    inputs = [{"image": image}]
    result = model.predict(model.preprocess_image(inputs), inputs)[0]
    result.pred_boxes.clip(result.image_size)
    return result.pred_boxes.tensor, result.scores, result.pred_classes


def distorted(image: torch.Tensor, scale: tuple[float, float] = (0.75, 1.3)) -> torch.Tensor:
    """``image`` resized by (scale_h, scale_w), rounded to whole pixels: another size and aspect ratio."""
    h, w = image.shape[-2:]
    size = (max(8, round(h * scale[0])), max(8, round(w * scale[1])))
    return F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]


@dataclass
class Difference:
    """Largest differences between an exported model and PyTorch over the checked images."""

    box: float = 0.0  # pixels
    score: float = 0.0
    class_mismatches: int = 0
    detections: int = 0
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def add(self, expected, actual) -> None:
        boxes, scores, classes = expected
        got_boxes, got_scores, got_classes = (t.to(boxes.device) for t in actual)
        if got_boxes.shape != boxes.shape:
            raise AssertionError(f"exported model gave {len(got_boxes)} detections where PyTorch gives {len(boxes)}")
        self.detections += len(boxes)
        if not len(boxes):
            return
        # Pair the two top-K lists one to one rather than rank by rank: two detections whose scores differ by
        # less than the export's rounding can swap ranks. Same class first, then the closest score and box.
        same_class = got_classes.long()[:, None] == classes.long()[None, :]
        score_diff = (got_scores.double()[:, None] - scores.double()[None, :]).abs()
        box_diff = (got_boxes.double()[:, None] - boxes.double()[None, :]).abs().amax(-1)
        rows, cols = linear_sum_assignment((score_diff + 1e-6 * box_diff + 1e6 * ~same_class).cpu().numpy())
        self.class_mismatches += int((~same_class[rows, cols]).sum())
        self.box = max(self.box, float(box_diff[rows, cols].max()))
        self.score = max(self.score, float(score_diff[rows, cols].max()))

    def within(self, box_tolerance: float, score_tolerance: float) -> bool:
        return self.class_mismatches == 0 and self.box <= box_tolerance and self.score <= score_tolerance

    def describe(self) -> str:
        return (
            f"largest difference: boxes {self.box:.3g} px, scores {self.score:.3g}; "
            f"{self.class_mismatches} of {self.detections} classes differ"
        )


def compare(model, run: Runner, images: list[torch.Tensor]) -> Difference:
    """Run ``run`` and the eager ``model`` on each image and on a distorted copy of it (another size)."""
    difference = Difference()
    for image in images:
        for x in (image, distorted(image)):
            difference.add(reference(model, x), run(x))
            difference.sizes.append(tuple(x.shape[-2:]))
    return difference
