"""REGO Table 3, row 3: 3 stages, glimpse scale 2x, alpha = (6, 4, 2). (The paper's text lists 6.0,
3.0, 2.0 for 2x, which no single scale gives; here the scale multiplies every ratio.)"""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.num_stages = 3
model.rego.glimpse_scale = 2.0
model.rego.alphas = None
