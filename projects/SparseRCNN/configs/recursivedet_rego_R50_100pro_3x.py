"""RecursiveDet + REGO, R50-FPN, 100 proposals, 3x schedule on COCO: the RecursiveDet ablation setting
(``SparseRCNN/recursivedet_R50_100pro_3x.py``) with REGO's 3 glimpse stages after the decoder. One config per row of
REGO Tables 2-3 in ``SparseRCNN/rego/``."""

from .models.recursivedet_rego import model
from .recursivedet_R50_100pro_3x import dataloader, lr_multiplier, optimizer, train  # the same COCO recipe

model.num_proposals = 100

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
