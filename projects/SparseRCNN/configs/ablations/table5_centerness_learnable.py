"""Paper Table 5, 'learnable': the full RecursiveDet with the centerness mask a parameter initialised from
Eq. 6."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.decoder.stage.centerness = "learnable"
