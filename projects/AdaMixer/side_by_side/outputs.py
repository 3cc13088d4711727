"""This project's AdaMixer on the test images, from the converted official weights.

Each image (random uint8, one per batch) goes through the model in eval mode;
:mod:`recursivedet.analysis.output_diff` compares the outputs with the official ones stage by stage and the
final detections pair by pair.
"""

import torch

from recursivedet import model_zoo


def build_project_model(proposals: int, state_dict: dict):
    """This project's AdaMixer from ``AdaMixer/models/adamixer.py``, loaded strictly with ``state_dict``; in eval
    mode, keeping the top ``proposals`` of proposals x classes as the official inference does."""
    from detectron2.config import instantiate

    cfg = model_zoo.get_config("AdaMixer/models/adamixer.py")
    cfg.model.num_proposals = proposals
    cfg.model.detections_per_image = proposals
    model = instantiate(cfg.model)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def run_project_model(model, images: list[torch.Tensor]) -> list[dict]:
    """Per image (one per batch): the stage logits (T, N, K) and boxes (T, N, 4) normalised cxcywh, and the final
    boxes (D, 4) pixel xyxy, scores (D,) and classes (D,)."""
    results = []
    with torch.no_grad():
        for image in images:
            h, w = image.shape[-2:]
            images = model.preprocess_image([{"image": image, "height": h, "width": w}])
            stages = model.run_decoder(images)
            # The model's top-k with boxes clipped to the image, as its forward gives them but without
            # detectron2's removal of boxes left empty by the clipping: the official code keeps those.
            inst = model.inference(*stages[-1], images.image_sizes)[0]
            inst.pred_boxes.clip(inst.image_size)
            results.append(
                {
                    "stage_logits": torch.stack([logits[0] for logits, _ in stages]),
                    "stage_boxes": torch.stack([boxes[0] for _, boxes in stages]),
                    "boxes": inst.pred_boxes.tensor.clone(),
                    "scores": inst.scores.clone(),
                    "classes": inst.pred_classes.clone(),
                }
            )
    return results
