"""REGO Table 2, row 4: 3 glimpse stages, alpha = (3, 2, 1) (the default; Table 3's 1x row)."""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 3
model.rego.glimpse_scale = 1.0
model.rego.alphas = None
