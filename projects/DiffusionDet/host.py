"""The DiffusionDet host as the library knows it: the checkpoint converter, the comparison with the official code
(500 proposals, 1 and 4 DDIM steps) and the paper's Table 2 rows on this host (500 proposals, 60 epochs, 1 DDIM
step)."""

from recursivedet.hosts import Comparison, Host, PaperRow

from . import convert
from .deploy import DiffusionDetGraph
from .modeling import DiffusionDet


def _comparison():
    from .side_by_side.adapter import ADAPTER

    return ADAPTER


TABLE2_ROWS = [
    PaperRow("Table 2", "DiffusionDet R50", "DiffusionDet/diffusiondet_R50_500pro_60ep.py", 111, None, 45.8),
    PaperRow(
        "Table 2",
        "RecursiveDet(DiffDet) R50",
        "DiffusionDet/recursivedet_diffusiondet_R50_500pro_60ep.py",
        57,
        None,
        47.1,
    ),
    PaperRow("Table 2", "DiffusionDet R101", "DiffusionDet/diffusiondet_R101_500pro_60ep.py", 130, None, 46.6),
    PaperRow(
        "Table 2",
        "RecursiveDet(DiffDet) R101",
        "DiffusionDet/recursivedet_diffusiondet_R101_500pro_60ep.py",
        76,
        None,
        46.9,
    ),
]

HOST = Host(
    name="DiffusionDet",
    converter=convert,
    comparison=Comparison(archs=("diffusiondet",), adapter=_comparison),
    paper_rows={"main": TABLE2_ROWS},
    meta_architecture=DiffusionDet,
    export=DiffusionDetGraph,
    inapplicable_switches={
        "model.proposal_box_init": "it has no learnable proposal boxes: they are ground truth corrupted with noise "
        "in training and drawn from noise at inference",
        "model.criterion.l1_box_format": "its dynamic-k criterion compares normalised (x1, y1, x2, y2), as the "
        "official DiffusionDet does",
    },
)
