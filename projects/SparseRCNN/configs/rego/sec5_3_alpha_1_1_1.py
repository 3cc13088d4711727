"""REGO Sec. 5.3 (text beside Table 2): 3 stages without enlargement, alpha = (1, 1, 1) (45.3 AP vs 45.9)."""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 3
model.rego.glimpse_scale = 1.0
model.rego.alphas = [1.0, 1.0, 1.0]
