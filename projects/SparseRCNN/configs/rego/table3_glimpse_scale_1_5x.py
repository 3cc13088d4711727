"""REGO Table 3, row 2: 3 stages, glimpse scale 1.5x, alpha = (4.5, 3, 1.5)."""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 3
model.rego.glimpse_scale = 1.5
model.rego.alphas = None
