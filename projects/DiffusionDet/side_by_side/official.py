"""The official DiffusionDet, built and run only in a worker process of its own (with the checkout on its
``sys.path``): its package import, its randomised weights, and the inference worker.

The official model is built from its own R50 config (``--proposals`` proposals) with seeded random weights. The
LayerNorm affine parameters and the head's biases are then randomised, because their defaults (ones, zeros) would
hide mistakes such as swapped q/k/v biases; the last box-delta layers are scaled down (a trained model's
refinements are small) and the class biases centred so that about half of the boxes score above the renewal
threshold 0.5, so that box renewal keeps some boxes and renews others.
"""

import sys
from pathlib import Path

import torch

from recursivedet.analysis.comparison_adapter import Settings
from recursivedet.analysis.worker_process import READY, serve

from .random_tape import official_sampling_draws

OFFICIAL_CONFIG = "configs/diffdet.coco.res50.yaml"


def build_official(settings: Settings, steps: int = 1):
    """(config, model) of the official checkout at ``settings.official_root`` with ``steps`` DDIM steps:
    seeded, on the CPU, before :func:`randomise_official`."""
    import warnings

    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    warnings.filterwarnings("ignore", category=FutureWarning)  # timm's deprecation notices
    torch.set_num_threads(settings.threads)
    root = Path(settings.official_root)
    sys.path.insert(0, str(root))
    import diffusiondet

    cfg = get_cfg()
    diffusiondet.add_diffusiondet_config(cfg)
    cfg.merge_from_file(str(root / OFFICIAL_CONFIG))
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.DEVICE = "cpu"
    cfg.MODEL.DiffusionDet.NUM_PROPOSALS = settings.proposals
    cfg.MODEL.DiffusionDet.SAMPLE_STEP = steps
    torch.manual_seed(settings.seed)
    return cfg, build_model(cfg)


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
                p.mul_(0.1)
            if "class_logits.bias" in name:
                p.copy_(-2.4 + 0.3 * torch.randn(p.shape, generator=g))


def official_optimizer(root: Path, cfg, model):
    """The optimizer of the checkout's own ``train_net.py`` (``Trainer.build_optimizer``: one param group per
    tensor, full-model gradient clipping inside its step)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("official_train_net", root / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Trainer.build_optimizer(cfg, model)


def official_worker(settings: Settings, work: Path) -> int:
    """Build and randomise the official model, save its state dict (``official_state.pth``), sample each image of
    ``images.pth`` (batch 1) with each step count, its noise from ``sampling_tape.pth``, and save the outputs
    (``official_outputs.pth``: per image and step count, per DDIM step the head's stage logits (T, N, K) and boxes
    (T, N, 4) pixel xyxy, and the final boxes (D, 4), scores and classes). With ``timing_runs``, then time "head"
    (one head call on the initial noise boxes at t = T - 1) and "model_<S>" for each step count on request."""
    from torchvision.ops import box_convert

    _, model = build_official(settings)
    randomise_official(model, settings.seed)
    model.eval()
    torch.save(model.state_dict(), work / "official_state.pth")

    calls = []
    model.head.register_forward_hook(lambda module, inputs, output: calls.append(output))
    images = torch.load(work / "images.pth")
    tapes = torch.load(work / "sampling_tape.pth")
    results = []
    with torch.no_grad():
        for i, image in enumerate(images):
            h, w = image.shape[-2:]
            per_steps = {}
            for steps in settings.steps:
                model.sampling_timesteps = steps
                calls.clear()
                with official_sampling_draws(tapes[steps][i]):
                    (out,) = model([{"image": image, "height": h, "width": w}])
                inst = out["instances"]
                per_steps[steps] = {
                    "step_logits": [logits[:, 0].clone() for logits, _ in calls],  # (T, 1, N, K) -> (T, N, K)
                    "step_boxes": [boxes[:, 0].clone() for _, boxes in calls],
                    "boxes": inst.pred_boxes.tensor.clone(),
                    "scores": inst.scores.clone(),
                    "classes": inst.pred_classes.clone(),
                }
            results.append(per_steps)
    torch.save(results, work / "official_outputs.pth")
    if settings.timing_runs <= 0:
        print(READY, flush=True)
        return 0

    image = images[0]
    inputs = [{"image": image, "height": image.shape[-2], "width": image.shape[-1]}]
    with torch.no_grad():
        batch, whwh = model.preprocess_image(inputs)
        maps = model.backbone(batch.tensor)
        features = [maps[f] for f in model.in_features]
        noise = tapes[settings.steps[0]][0][0][None]
        boxes = box_convert(((noise.clamp(-model.scale, model.scale) / model.scale) + 1) / 2, "cxcywh", "xyxy")
        pixel_boxes = boxes * whwh[:, None, :]
        t = torch.full((1,), model.num_timesteps - 1, dtype=torch.long)

    def whole_model(steps):
        def run():
            model.sampling_timesteps = steps
            return model(inputs)

        return run

    parts = {"head": lambda: model.head(features, pixel_boxes, t, None)}
    parts.update({f"model_{steps}": whole_model(steps) for steps in settings.steps})
    serve(parts)
    return 0
