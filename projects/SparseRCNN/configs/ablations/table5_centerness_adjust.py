"""Paper Table 5, 'adjust': the full RecursiveDet with the centerness peak moved by per-box offsets
predicted from the proposal feature."""

from ..recursivedet_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.decoder.stage.centerness = "adjust"
