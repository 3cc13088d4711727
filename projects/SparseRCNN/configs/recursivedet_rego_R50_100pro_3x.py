"""RecursiveDet + REGO, R50-FPN, 100 proposals, 3x schedule on COCO: the RecursiveDet ablation setting
(``SparseRCNN/recursivedet_R50_100pro_3x.py``) with REGO's 3 glimpse stages after the decoder. One config per row of
REGO Tables 2-3 in ``SparseRCNN/rego/``."""

from recursivedet.model_zoo import get_config

from .models.recursivedet_rego import model

dataloader = get_config("common/data/coco.py").dataloader
optimizer = get_config("common/optim.py").optimizer
lr_multiplier = get_config("common/schedule.py").lr_multiplier
train = get_config("common/train.py").train

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
