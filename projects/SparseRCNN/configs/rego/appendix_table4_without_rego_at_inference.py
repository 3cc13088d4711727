"""REGO Appendix A.2, Table 4, row 3: trained with REGO (3 stages, alpha = (3, 2, 1)), inferred without it:
the decoder's last stage is the output. (Row 2, inference with REGO, is ``table2_3_stages.py``; the switch
also applies to a model trained with it: ``--eval-only model.rego.at_inference=False``.)"""

from ..recursivedet_rego_R50_100pro_3x import dataloader, lr_multiplier, model, optimizer, train  # noqa: F401

model.rego.at_inference = False
