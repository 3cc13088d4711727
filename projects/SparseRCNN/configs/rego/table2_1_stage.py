"""REGO Table 2, row 2: 1 glimpse stage, alpha = 1."""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 1
model.rego.glimpse_scale = 1.0
model.rego.alphas = None
