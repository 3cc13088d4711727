"""The official model, built and run only in a worker process of its own (the checkout on its ``sys.path``):
its randomised weights, its outputs and its timed parts.

The official model is built from its own R50 config (``proposals`` queries) with seeded random weights. The
LayerNorm affine parameters, the biases, the zero-initialised layers (the mixing-parameter generator, the box
delta) and the initial boxes are then randomised, because their defaults (ones, zeros, identical whole-image
boxes) would hide mistakes such as a swapped x / y or a transposed mixer.
"""

from pathlib import Path

import torch

from recursivedet.analysis.comparison_adapter import Settings
from recursivedet.analysis.worker_process import READY, serve

from .official_import import OFFICIAL_CONFIG, import_official

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


def build_official(settings: Settings):
    """(config, model) of the official checkout: seeded, on the CPU, in train mode, before randomisation."""
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(settings.threads)
    root = Path(settings.official_root)
    config = import_official(root)
    from mmdet.models import build_detector

    cfg = config.fromfile(str(root / OFFICIAL_CONFIG))
    cfg.model.pretrained = None
    cfg.model.rpn_head.num_query = settings.proposals
    cfg.model.test_cfg.rcnn.max_per_img = settings.proposals
    torch.manual_seed(settings.seed)
    model = build_detector(cfg.model)
    model.init_weights()
    return cfg, model


def randomise_official(model, seed: int) -> None:
    """Break the symmetries of the official initialisation (see the module docstring)."""
    from torch import nn

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm) and m.weight is not None:
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.roi_head.named_parameters():
            if name.endswith("bias") and "sampling_offset_generator" not in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            if name.endswith(("parameter_generator.0.weight", "sampling_offset_generator.0.weight")):
                p.copy_(0.01 * torch.randn(p.shape, generator=g))
            if name.endswith("fc_reg.weight"):
                p.copy_(0.01 * torch.randn(p.shape, generator=g))  # moves a box by ~0.1 of its size per stage
        boxes = model.rpn_head.init_proposal_bboxes.weight
        n = boxes.shape[0]
        boxes[:, :2] = 0.5 + 0.4 * (torch.rand(n, 2, generator=g) - 0.5)  # centres 0.3 .. 0.7
        boxes[:, 2:] = 0.4 + 0.6 * torch.rand(n, 2, generator=g)  # sizes 0.4 .. 1.0


def official_batch(images: list[torch.Tensor]):
    """mmdet inputs of uint8 (3, h, w) RGB images: normalised, zero-padded to a multiple of 32 (its ``Pad``),
    and their metas."""
    mean = torch.tensor(PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(3, 1, 1)
    height = max(-(-im.shape[1] // 32) * 32 for im in images)
    width = max(-(-im.shape[2] // 32) * 32 for im in images)
    batch = torch.zeros(len(images), 3, height, width)
    metas = []
    for i, image in enumerate(images):
        h, w = image.shape[1:]
        batch[i, :, :h, :w] = (image.float() - mean) / std
        metas.append(
            {
                "img_shape": (h, w, 3),
                "ori_shape": (h, w, 3),
                "pad_shape": (height, width, 3),
                "batch_input_shape": (height, width),
                "scale_factor": torch.ones(4).numpy(),
                "flip": False,
            }
        )
    return batch, metas


def stage_outputs(model, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The official decoder's stage loop (its ``simple_test``) on one image: logits (T, N, K), boxes (T, N, 4)
    pixel xyxy, each stage through the official ``_bbox_forward``."""
    batch, metas = official_batch([image])
    x = model.extract_feat(batch)
    xyzr, content, _ = model.rpn_head.simple_test_rpn(x, metas)
    logits, boxes = [], []
    for stage in range(model.roi_head.num_stages):
        result = model.roi_head._bbox_forward(stage, x, xyzr, content, metas)
        xyzr, content = result["query_xyzr"], result["query_content"]
        logits.append(result["cls_score"][0])
        boxes.append(result["decode_bbox_pred"][0])
    return torch.stack(logits), torch.stack(boxes)


def final_detections(model, image: torch.Tensor) -> dict:
    """The official ``simple_test`` detections of one image (per-class arrays) as boxes (D, 4) pixel xyxy
    clipped to the image (as detectron2's postprocessing does to this project's), scores (D,), classes (D,)."""
    batch, metas = official_batch([image])
    (per_class,) = model.simple_test(batch, metas, rescale=False)
    dets = [(torch.as_tensor(d), c) for c, d in enumerate(per_class) if len(d)]
    boxes = torch.cat([d[:, :4] for d, _ in dets])
    h, w = image.shape[1:]
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
    return {
        "boxes": boxes,
        "scores": torch.cat([d[:, 4] for d, _ in dets]),
        "classes": torch.cat([torch.full((len(d),), c) for d, c in dets]),
    }


def official_worker(settings: Settings, work: Path) -> int:
    """Build and randomise the official model, save its state dict (``official_state.pth``), run the images of
    ``images.pth`` one per batch and save the outputs (``official_outputs.pth``); with ``timing_runs``, then
    time "head" (everything after the neck: the query generator and the decoder's stages) and "model" on
    request (:func:`~recursivedet.analysis.worker_process.serve`)."""
    _, model = build_official(settings)
    randomise_official(model, settings.seed)
    model.eval()
    torch.save(model.state_dict(), work / "official_state.pth")
    results = []
    images = torch.load(work / "images.pth")
    with torch.no_grad():
        for image in images:
            logits, boxes = stage_outputs(model, image)
            results.append({"stage_logits": logits, "stage_boxes": boxes, **final_detections(model, image)})
    torch.save({"results": results, "box_format": "xyxy_pixels"}, work / "official_outputs.pth")
    if settings.timing_runs <= 0:
        print(READY, flush=True)
        return 0

    batch, metas = official_batch(images[:1])
    with torch.no_grad():
        x = model.extract_feat(batch)

    def head():
        xyzr, content, whwh = model.rpn_head.simple_test_rpn(x, metas)
        return model.roi_head.simple_test(x, xyzr, content, metas, imgs_whwh=whwh)

    serve({"head": head, "model": lambda: model.simple_test(batch, metas, rescale=False)})
    return 0
