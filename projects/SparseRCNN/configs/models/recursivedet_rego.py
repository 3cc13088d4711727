"""RecursiveDet (``recursivedet.py``) with REGO after its decoder (REGO, CVPR 2022): 3 glimpse stages with
enlargement ratios alpha = (3, 2, 1) and glimpse scale 1 (REGO Sec. 4.3 and the best rows of Tables 2-3),
2 decoder layers per stage, losses on each stage's output, REGO's last stage as the model's output.
The REGO node and its other settings are in ``sparse_rcnn.py``."""

from .recursivedet import model

model.rego.num_stages = 3
