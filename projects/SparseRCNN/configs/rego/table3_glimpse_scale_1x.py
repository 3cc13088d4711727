"""REGO Table 3, row 1: 3 stages, glimpse scale 1x, alpha = (3, 2, 1) (same model as Table 2, row 4)."""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 3
model.rego.glimpse_scale = 1.0
model.rego.alphas = None
