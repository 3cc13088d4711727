"""The official model, built and run only in a worker process of its own (with the checkout on its
``sys.path``): its package import, its randomised weights, and the inference worker.

The official model is built from its own config (R50-FPN, ``proposals`` proposals) with seeded random
weights. The LayerNorm affine parameters, the biases of the head and the initial proposal boxes are then
randomised, because their defaults (ones, zeros, identical whole-image boxes) would hide mistakes such as
swapped q/k/v biases or a mirrored box coordinate.
"""

import sys
from pathlib import Path

import torch

from recursivedet.analysis.comparison_adapter import Settings
from recursivedet.analysis.worker_process import READY, serve

OFFICIAL_CONFIG = "projects/SparseRCNN/configs/sparsercnn.res50.100pro.3x.yaml"


def import_official(root: Path):
    """Import the official ``sparsercnn`` package of the checkout at ``root``."""
    import torchvision

    sys.path.insert(0, str(root / "projects" / "SparseRCNN"))
    # Its util/misc.py compares float(torchvision.__version__[:3]) with 0.7: "0.29.1" reads as 0.2 and
    # sends it to a torchvision function removed long ago. Any version >= 0.7 takes the modern path.
    version = torchvision.__version__
    torchvision.__version__ = "99.0"
    try:
        import sparsercnn
    finally:
        torchvision.__version__ = version
    return sparsercnn


def randomise_official(model, seed: int) -> None:
    """Break the symmetries of the official initialisation (see the module docstring)."""
    from torch import nn

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.LayerNorm):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
        for name, p in model.head.named_parameters():
            if name.endswith("bias"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
            if "bboxes_delta." in name:
                # Xavier-sized deltas move a box by about its own size per stage; after six Sparse R-CNN
                # stages most boxes lie far outside the image and clip to nothing. Refinements of a trained
                # model are small: keep the last layer at a tenth so the final detections stay meaningful.
                p.mul_(0.1)
        boxes = model.init_proposal_boxes.weight
        n = boxes.shape[0]
        boxes[:, :2] = 0.5 + 0.4 * (torch.rand(n, 2, generator=g) - 0.5)  # centres 0.3 .. 0.7
        boxes[:, 2:] = 0.4 + 0.6 * torch.rand(n, 2, generator=g)  # sizes 0.4 .. 1.0


def build_official(settings: Settings):
    """(config, model) of the official checkout at ``settings.official_root``: seeded, on the CPU, in
    ``settings.dtype``, before :func:`randomise_official`."""
    import warnings

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    warnings.filterwarnings("ignore", category=FutureWarning)  # timm and torch.jit deprecation notices
    torch.set_num_threads(settings.threads)
    root = Path(settings.official_root)
    sparsercnn = import_official(root)
    cfg = get_cfg()
    sparsercnn.add_sparsercnn_config(cfg)
    cfg.merge_from_file(str(root / OFFICIAL_CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.SparseRCNN.NUM_PROPOSALS = settings.proposals
    torch.set_default_dtype(getattr(torch, settings.dtype))
    torch.manual_seed(settings.seed)
    return cfg, build_model(cfg)


def official_optimizer(root: Path, cfg, model):
    """The optimizer of the checkout's own ``train_net.py`` (``Trainer.build_optimizer``: one param group per
    tensor, full-model gradient clipping inside its step)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_train_net", root / "projects/SparseRCNN/train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Trainer.build_optimizer(cfg, model)


def official_worker(settings: Settings, work: Path) -> int:
    """Build and randomise the official model, save its state dict (``official_state.pth``), run the images of
    ``images.pth`` one per batch and save the outputs (``official_outputs.pth``: per image the stage logits
    (T, N, K) and boxes (T, N, 4) from its head, the final boxes (D, 4) pixel xyxy, scores (D,) and classes
    (D,); and the format of the stage boxes). With ``timing_runs``, then time "head" and "model" on request
    (:func:`~.worker.serve`). Exit status 2 when the checkout is not of ``settings.arch``."""
    from torchvision.ops import box_convert

    _, model = build_official(settings)
    if settings.dtype == "float64" and hasattr(model, "positional_encoding"):
        # Its image PE is computed in float32 whatever the default dtype (explicit cumsum dtype) and would
        # then meet float64 weights; widen its output, as this project's model does.
        model.positional_encoding.register_forward_hook(lambda module, inputs, output: output.double())
    found = "recursivedet" if hasattr(model.head, "rcnn_head_first") else "sparse_rcnn"
    if found != settings.arch:
        root = settings.official_root
        print(f"error: the checkout at {root} is the official {found} code, not {settings.arch}", file=sys.stderr)
        return 2
    randomise_official(model, settings.seed)
    model.eval()
    torch.save(model.state_dict(), work / "official_state.pth")

    captured = []
    model.head.register_forward_hook(lambda module, inputs, output: captured.append(output))
    results = []
    images = torch.load(work / "images.pth")
    with torch.no_grad():
        for image in images:
            captured.clear()
            h, w = image.shape[-2:]
            (out,) = model([{"image": image, "height": h, "width": w}])
            logits, boxes = captured[-1]  # (T, 1, N, K), (T, 1, N, 4)
            inst = out["instances"]
            results.append(
                {
                    "stage_logits": logits[:, 0].clone(),
                    "stage_boxes": boxes[:, 0].clone(),
                    "boxes": inst.pred_boxes.tensor.clone(),
                    "scores": inst.scores.clone(),
                    "classes": inst.pred_classes.clone(),
                }
            )

    box_format = "cxcywh_normalised" if found == "recursivedet" else "xyxy_pixels"
    torch.save({"results": results, "box_format": box_format}, work / "official_outputs.pth")
    if settings.timing_runs <= 0:
        print(READY, flush=True)
        return 0

    image = images[0]
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    with torch.no_grad():
        batch, whwh = model.preprocess_image(inputs)
        maps = model.backbone(batch.tensor)
        features = [maps[f] for f in model.in_features]
        init_boxes = model.init_proposal_boxes.weight.clone()[None]
        init_features = model.init_proposal_features.weight
    if found == "recursivedet":
        # The image PE maps are made outside its head; this project makes the equivalent inside its
        # decoder, so they are part of the head here.
        def head():
            pos = [model.positional_encoding(f) for f in features]
            return model.head(features, init_boxes, init_features, whwh, pos, model.pos_local)

    else:
        pixel_boxes = box_convert(init_boxes, "cxcywh", "xyxy") * whwh[:, None, :]
        head = lambda: model.head(features, pixel_boxes, init_features)
    serve({"head": head, "model": lambda: model(inputs)})
    return 0
