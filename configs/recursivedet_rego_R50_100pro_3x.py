"""RecursiveDet + REGO, R50-FPN, 100 proposals, 3x schedule on COCO: the RecursiveDet ablation setting
(``recursivedet_R50_100pro_3x.py``) with REGO's 3 glimpse stages after the decoder. One config per row of
REGO Tables 2-3 in ``configs/rego/``."""

from .common.data.coco import dataloader
from .common.optim import optimizer
from .common.schedule import lr_multiplier
from .common.train import train
from .models.recursivedet_rego import model

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
