"""The training workers of the comparison (the steps and their comparison:
:mod:`recursivedet.analysis.training_comparison`): each code's own optimizer set-up (the official config's
AdamW through mmcv's ``build_optimizer``, gradients of the trainable parameters clipped at norm 1 as its
``OptimizerHook``; this project's ``AdaMixer/adamixer_R50_300pro_3x.py``), on random images with 5 random boxes
each.
"""

from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from recursivedet import model_zoo
from recursivedet.analysis.comparison_adapter import Settings
from recursivedet.analysis.measure import detectron2_inputs
from recursivedet.analysis.training_comparison import serve_training

from .official import build_official, official_batch
from .outputs import build_project_model


class OfficialTraining(nn.Module):
    """The official detector taking this project's training inputs: its ``forward_train`` on the same images and
    boxes, returning the entries its runner sums (names containing "loss")."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, inputs: list[dict]) -> dict:
        batch, metas = official_batch([x["image"] for x in inputs])
        boxes = [x["instances"].gt_boxes.tensor for x in inputs]
        labels = [x["instances"].gt_classes for x in inputs]
        losses = self.model.forward_train(batch, metas, boxes, labels)
        return {k: v for k, v in losses.items() if "loss" in k}


def training_worker(settings: Settings, work: Path, side: str) -> int:
    """Worker: ``side``'s model from the saved weights (``project_state.pth`` / ``official_state.pth``) and its
    optimizer; answer the first step's total loss on the saved batch (``train_batch.pth``), time steps on
    request, then answer the peak resident memory and that before the steps."""
    torch.set_num_threads(settings.threads)
    cfg = model_zoo.get_config("AdaMixer/adamixer_R50_300pro_3x.py")
    clip = cfg.train.clip_grad
    if side == "official":
        from mmcv.runner import build_optimizer

        official_cfg, model = build_official(settings)
        model.load_state_dict(torch.load(work / "official_state.pth"), strict=True)
        optimizer = build_optimizer(model, official_cfg.optimizer)
        grad_clip = official_cfg.optimizer_config.grad_clip
        clip = SimpleNamespace(max_norm=grad_clip.max_norm, norm_type=grad_clip.norm_type)
        model = OfficialTraining(model)
    else:
        from detectron2.config import instantiate

        model = build_project_model(settings.proposals, torch.load(work / "project_state.pth"))
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
    return serve_training(model, optimizer, detectron2_inputs(torch.load(work / "train_batch.pth")), clip)
