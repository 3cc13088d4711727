"""RecursiveDet (``recursivedet.py``) with REGO after its decoder (REGO, CVPR 2022): 3 glimpse stages with
enlargement ratios alpha = (3, 2, 1) and glimpse scale 1 (REGO Sec. 4.3 and the best rows of Tables 2-3),
2 decoder layers per stage, losses on each stage's output, REGO's last stage as the model's output.

The width, the number of classes and the glimpse resolution follow the decoder; heads, FFN width and dropout
follow it too unless changed here (the official REGO code takes them from its host transformer).
"""

from .recursivedet import model

model.rego = dict(
    num_stages=3,  # K (Table 2)
    glimpse_scale=1.0,  # multiplies every alpha (Table 3)
    alphas=None,  # None: (K, ..., 2, 1) (Sec. 4.3); e.g. [1, 1, 1] for Sec. 5.3's ablation
    num_layers=2,  # decoder layers per stage (Sec. 4.3)
    num_heads="${..decoder.stage.num_heads}",
    ffn_dim="${..decoder.stage.ffn_dim}",
    dropout="${..decoder.stage.dropout}",
    glimpse_groups=4,  # groups of the glimpse conv (official code)
    aux_losses=False,  # losses on each stage's earlier layers: see RecurrentGlimpseDecoder
    at_inference=True,  # False: trained with REGO, inferred without (Appendix A.2, Table 4)
    prior_prob=0.01,
)
