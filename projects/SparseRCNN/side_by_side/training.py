"""The training workers of the comparison (the steps and their comparison:
:mod:`recursivedet.analysis.training_comparison`): each code's own optimizer set-up (the official
``Trainer.build_optimizer`` of its ``train_net.py``: one param group per tensor; this project's config
``<arch>_R50_100pro_3x.py``), on random images with 5 random boxes each.
"""

from pathlib import Path

import torch

from recursivedet import model_zoo
from recursivedet.analysis.comparison_adapter import Settings
from recursivedet.analysis.measure import detectron2_inputs
from recursivedet.analysis.training_comparison import serve_training

from .official import build_official, official_optimizer
from .outputs import build_project_model


def training_worker(settings: Settings, work: Path, side: str) -> int:
    """Worker: ``side``'s model from the saved weights (``project_state.pth`` / ``official_state.pth``) and its
    optimizer; answer the first step's total loss on the saved batch (``train_batch.pth``), time steps on
    request, then answer the peak resident memory and that before the steps."""
    torch.set_num_threads(settings.threads)
    if side == "official":
        cfg, model = build_official(settings)
        model.load_state_dict(torch.load(work / "official_state.pth"), strict=True)
        optimizer = official_optimizer(Path(settings.official_root), cfg, model)
        clip = None  # its optimizer clips the whole model's gradient inside step()
    else:
        from detectron2.config import instantiate

        model = build_project_model(settings.arch, settings.proposals, torch.load(work / "project_state.pth"))
        cfg = model_zoo.get_config(f"SparseRCNN/{settings.arch}_R50_100pro_3x.py")
        cfg.optimizer.params.model = model
        optimizer = instantiate(cfg.optimizer)
        clip = cfg.train.clip_grad if cfg.train.clip_grad.enabled else None
    return serve_training(model, optimizer, detectron2_inputs(torch.load(work / "train_batch.pth")), clip)
