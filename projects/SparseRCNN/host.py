"""The Sparse R-CNN host as the library knows it: the converter of official Sparse R-CNN and RecursiveDet
checkpoints, the comparison with both official codes, and the paper's rows on this host (Tables 2, 4, 5, 6; R50-FPN,
100 proposals for the ablations, 300 for Table 2, 36 epochs; the Swin rows with the official code's Swin-FPN)."""

from recursivedet.deploy.graph import DeployableDetector
from recursivedet.hosts import Comparison, Host, PaperRow

from . import convert
from .modeling import RecursiveDet


def _comparison():
    from .side_by_side.adapter import ADAPTER

    return ADAPTER


ABLATIONS = "SparseRCNN/ablations/"

ABLATION_ROWS = [
    PaperRow("Table 4", "Sparse R-CNN", ABLATIONS + "table4_sparse_rcnn.py", 106, 134, 42.8),
    PaperRow("Table 4", "RecSt", ABLATIONS + "table4_recst.py", 40, 134, 42.4),
    PaperRow("Table 4", "RecSt + RecDy", ABLATIONS + "table4_recst_recdy.py", 40, 142, 43.6),
    PaperRow("Table 4", "RecSt-dagger + RecDy", ABLATIONS + "table4_recst_dagger_recdy.py", 53, 140, 43.9),
    PaperRow("Table 6", "bb-PE", ABLATIONS + "table6_bbpe.py", 110, 137, 43.1),
    PaperRow("Table 6", "bb-PE + cb-PE", ABLATIONS + "table6_bbpe_cbpe.py", 110, 138, 43.4),
    PaperRow("Table 6", "Recursive + bb-PE", ABLATIONS + "table6_recursive_bbpe.py", 55, 145, 44.4),
    PaperRow("Table 6", "Recursive + bb-PE + cb-PE", ABLATIONS + "table6_recursive_bbpe_cbpe.py", 55, 149, 45.2),
    PaperRow("Table 5", "centerness static", ABLATIONS + "table6_recursive_bbpe_cbpe.py", None, None, 45.2),
    PaperRow("Table 5", "centerness learnable", ABLATIONS + "table5_centerness_learnable.py", None, None, 44.9),
    PaperRow("Table 5", "centerness adjust", ABLATIONS + "table5_centerness_adjust.py", None, None, 44.5),
]

MAIN_ROWS = [
    PaperRow("Table 2", "Sparse R-CNN R50", "SparseRCNN/sparse_rcnn_R50_300pro_3x.py", 106, None, 45.0),
    PaperRow("Table 2", "RecursiveDet R50", "SparseRCNN/recursivedet_R50_300pro_3x.py", 55, None, 46.5),
    PaperRow("Table 2", "Sparse R-CNN R101", "SparseRCNN/sparse_rcnn_R101_300pro_3x.py", 125, None, 46.4),
    PaperRow("Table 2", "RecursiveDet R101", "SparseRCNN/recursivedet_R101_300pro_3x.py", 74, None, 47.1),
]

# Table 2, Swin backbones (300 proposals, 36 epochs; the official code's Swin-FPN).
SWIN_ROWS = [
    PaperRow("Table 2", "Sparse R-CNN Swin-T", "SparseRCNN/sparse_rcnn_swin_T_300pro_3x.py", 110, None, 47.9),
    PaperRow("Table 2", "RecursiveDet Swin-T", "SparseRCNN/recursivedet_swin_T_300pro_3x.py", 58, None, 48.9),
    PaperRow("Table 2", "Sparse R-CNN Swin-B", "SparseRCNN/sparse_rcnn_swin_B_300pro_3x.py", 169, None, 52.0),
    PaperRow("Table 2", "RecursiveDet Swin-B", "SparseRCNN/recursivedet_swin_B_300pro_3x.py", 118, None, 53.1),
]

HOST = Host(
    name="SparseRCNN",
    converter=convert,
    comparison=Comparison(archs=("recursivedet", "sparse_rcnn"), adapter=_comparison),
    paper_rows={"ablation": ABLATION_ROWS, "main": MAIN_ROWS, "swin": SWIN_ROWS},
    meta_architecture=RecursiveDet,
    export=DeployableDetector,
)
