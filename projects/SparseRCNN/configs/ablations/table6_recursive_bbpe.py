"""Paper Table 6, row 5: Recursive (RecSt-dagger + RecDy) + bb-PE, no centerness."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.decoder.stage.centerness = "none"
