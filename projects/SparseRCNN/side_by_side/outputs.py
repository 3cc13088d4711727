"""This project's model on the test images, and its outputs compared with the official ones.

Each image (random uint8, one per batch: the official RecursiveDet inference scales boxes for a single
image) goes through both models in eval mode; :mod:`recursivedet.analysis.output_diff` compares the outputs
stage by stage and the final detections pair by pair.
"""

import torch

from recursivedet import model_zoo


def build_project_model(
    arch: str, proposals: int, state_dict: dict, dtype: str = "float32", dense_roi_pe: bool = False
):
    """This project's model from the config ``models/<arch>.py``, loaded strictly with ``state_dict``.

    With ``dtype="float64"`` the model is built under that default dtype (so that constants such as the
    pixel mean are not rounded to float32 first, as in the official model built the same way).
    ``dense_roi_pe`` pools positional maps with RoIAlign, as the official code does, instead of the
    closed-form RoI PE of the config's default.
    """
    from detectron2.config import instantiate

    cfg = model_zoo.get_config(f"SparseRCNN/models/{arch}.py")
    cfg.model.num_proposals = proposals
    cfg.model.decoder.stage.dynamic_conv_pe_form = "official"  # the official code's form of the box PE
    if dense_roi_pe:
        cfg.model.decoder.analytic_roi_pe = False
    # The official inference keeps the top num_proposals of proposals x classes.
    cfg.model.detections_per_image = proposals
    previous = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, dtype))
    try:
        model = instantiate(cfg.model).to(getattr(torch, dtype))
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


def run_project_model(model, images: list[torch.Tensor]) -> list[dict]:
    """Per image (one per batch): the stage logits (T, N, K) and boxes (T, N, 4) normalised cxcywh from the
    decoder, and the final boxes (D, 4) pixel xyxy, scores (D,) and classes (D,)."""
    captured = []
    handle = model.decoder.register_forward_hook(lambda module, inputs, output: captured.append(output))
    results = []
    with torch.no_grad():
        for image in images:
            captured.clear()
            h, w = image.shape[-2:]
            (out,) = model([{"image": image, "height": h, "width": w}])
            stages = captured[-1]
            inst = out["instances"]
            results.append(
                {
                    "stage_logits": torch.stack([logits[0] for logits, _ in stages]),
                    "stage_boxes": torch.stack([boxes[0] for _, boxes in stages]),
                    "boxes": inst.pred_boxes.tensor.clone(),
                    "scores": inst.scores.clone(),
                    "classes": inst.pred_classes.clone(),
                }
            )
    handle.remove()
    return results
