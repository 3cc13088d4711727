"""REGO Table 2, row 3: 2 glimpse stages, alpha = (2, 1)."""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 2
model.rego.glimpse_scale = 1.0
model.rego.alphas = None
