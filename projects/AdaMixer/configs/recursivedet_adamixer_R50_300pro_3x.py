"""RecursiveDet (AdaMixer), R50, 300 queries, AdaMixer's 3x recipe (paper Table 2: 43M parameters, 47.9 AP)."""

from .adamixer_R50_300pro_3x import dataloader, lr_multiplier, optimizer, train
from .models.recursivedet_adamixer import model

__all__ = ["dataloader", "lr_multiplier", "model", "optimizer", "train"]
