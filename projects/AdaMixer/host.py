"""The AdaMixer host as the library knows it: the checkpoint converter, the comparison with the official code (300
queries) and the paper's Table 2 rows on this host (300 queries, 36 epochs; no centerness PE, paper Sec. 4.2)."""

from recursivedet.hosts import Comparison, Host, PaperRow

from . import convert
from .deploy import AdaMixerGraph
from .modeling import AdaMixer


def _comparison():
    from .side_by_side.adapter import ADAPTER

    return ADAPTER


TABLE2_ROWS = [
    PaperRow("Table 2", "AdaMixer R50", "AdaMixer/adamixer_R50_300pro_3x.py", 135, None, 47.0),
    PaperRow(
        "Table 2", "RecursiveDet(AdaMixer) R50", "AdaMixer/recursivedet_adamixer_R50_300pro_3x.py", 43, None, 47.9
    ),
    PaperRow("Table 2", "AdaMixer R101", "AdaMixer/adamixer_R101_300pro_3x.py", 154, None, 48.0),
    PaperRow(
        "Table 2", "RecursiveDet(AdaMixer) R101", "AdaMixer/recursivedet_adamixer_R101_300pro_3x.py", 62, None, 48.9
    ),
]

HOST = Host(
    name="AdaMixer",
    converter=convert,
    comparison=Comparison(archs=("adamixer",), adapter=_comparison),
    paper_rows={"main": TABLE2_ROWS},
    meta_architecture=AdaMixer,
    export=AdaMixerGraph,
    inapplicable_switches={
        "model.proposal_box_init": "its initial positions are the whole image, not learned (the official query "
        "generator)",
        "model.decoder.stage.box_refinement": "it refines (x, y, z, r) positions, the official AdaMixer's only form",
        "model.decoder.box_delta_init": "its position update starts at zero, as in the official initialisation",
        "model.decoder.stage.dynamic_conv_pe_form": "its position term enters the adaptive mixing before a LayerNorm "
        "over points and channels, which keeps it: it has one form, and it acts",
    },
)
