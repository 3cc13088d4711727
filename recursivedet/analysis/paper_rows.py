"""The paper's rows, each with the config that reproduces it, and the parameter counts of the official codes.

The rows (figures transcribed from RecursiveDet, ICCV 2023, Tables 2, 4, 5 and 6: parameters in millions, GFLOPs and
AP on COCO val2017) are declared by each host's project (``projects/<Host>/host.py``) and gathered by
:func:`paper_rows`.
"""

from recursivedet.hosts import PaperRow, paper_rows

__all__ = ["OFFICIAL_PARAMETERS", "OFFICIAL_STAGE_PARAMETERS", "PaperRow", "paper_rows"]


# Measured with the official code (R50-FPN, 100 proposals, frozen stem and res2): exact targets.
OFFICIAL_PARAMETERS = {
    "SparseRCNN/ablations/table4_sparse_rcnn.py": 106_237_768,
    "SparseRCNN/ablations/table6_recursive_bbpe_cbpe.py": 54_612_476,
    "DiffusionDet/diffusiondet_R50_500pro_60ep.py": 110_673_336,  # official DiffusionDet, 500 proposals
    "AdaMixer/adamixer_R50_300pro_3x.py": 134_842_904,  # official AdaMixer, 300 queries
}
OFFICIAL_STAGE_PARAMETERS = {
    "sparse_rcnn": 13_235_412,
    "recursivedet": 13_893_590,
    "recursivedet_pe": 658_178,
    "diffusiondet": 13_760_212,  # Sparse R-CNN's stage + its time MLP (SiLU, Linear 1024 -> 512)
    "diffusiondet_time_mlp": 1_312_768,  # the global time MLP, once per model
    "adamixer": 18_378_716,  # MSA 263,168, Dyn 8,421,376, Out 8,388,864, heads 154,196, others 1,151,104, tau 8
}
