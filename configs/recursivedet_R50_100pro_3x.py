"""RecursiveDet (Sparse R-CNN host), R50-FPN, 100 proposals, 3x schedule on COCO: the paper's ablation
setting (Tables 4-6) and its full model (Table 6, last row)."""

from .common.data.coco import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.recursivedet import model

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
