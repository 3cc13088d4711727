"""The paper's ablation and main-result rows, each with the config that reproduces it.

Figures transcribed from RecursiveDet (ICCV 2023) Tables 2, 4, 5 and 6: parameters in millions, GFLOPs and
AP on COCO val2017 (R50-FPN, 100 proposals for the ablations, 300 for Table 2, 36-epoch schedule; Table 2's
Swin-T/B rows with the official code's Swin-FPN; the DiffusionDet host's Table 2 rows: 500 proposals, 60 epochs,
configs in projects/DiffusionDet).
"""

from dataclasses import dataclass

from recursivedet.model_zoo import get_config_file


@dataclass(frozen=True)
class PaperRow:
    table: str
    label: str
    config: str  # config name, see recursivedet.model_zoo
    params_m: float | None = None
    gflops: float | None = None
    ap: float | None = None

    @property
    def config_path(self) -> str:
        return get_config_file(self.config)


ABLATION_ROWS = [
    PaperRow("Table 4", "Sparse R-CNN", "ablations/table4_sparse_rcnn.py", 106, 134, 42.8),
    PaperRow("Table 4", "RecSt", "ablations/table4_recst.py", 40, 134, 42.4),
    PaperRow("Table 4", "RecSt + RecDy", "ablations/table4_recst_recdy.py", 40, 142, 43.6),
    PaperRow("Table 4", "RecSt-dagger + RecDy", "ablations/table4_recst_dagger_recdy.py", 53, 140, 43.9),
    PaperRow("Table 6", "bb-PE", "ablations/table6_bbpe.py", 110, 137, 43.1),
    PaperRow("Table 6", "bb-PE + cb-PE", "ablations/table6_bbpe_cbpe.py", 110, 138, 43.4),
    PaperRow("Table 6", "Recursive + bb-PE", "ablations/table6_recursive_bbpe.py", 55, 145, 44.4),
    PaperRow("Table 6", "Recursive + bb-PE + cb-PE", "ablations/table6_recursive_bbpe_cbpe.py", 55, 149, 45.2),
    PaperRow("Table 5", "centerness static", "ablations/table6_recursive_bbpe_cbpe.py", None, None, 45.2),
    PaperRow("Table 5", "centerness learnable", "ablations/table5_centerness_learnable.py", None, None, 44.9),
    PaperRow("Table 5", "centerness adjust", "ablations/table5_centerness_adjust.py", None, None, 44.5),
]

MAIN_ROWS = [
    PaperRow("Table 2", "Sparse R-CNN R50", "sparse_rcnn_R50_300pro_3x.py", 106, None, 45.0),
    PaperRow("Table 2", "RecursiveDet R50", "recursivedet_R50_300pro_3x.py", 55, None, 46.5),
    PaperRow("Table 2", "Sparse R-CNN R101", "sparse_rcnn_R101_300pro_3x.py", 125, None, 46.4),
    PaperRow("Table 2", "RecursiveDet R101", "recursivedet_R101_300pro_3x.py", 74, None, 47.1),
]

# Table 2, Swin backbones (Sparse R-CNN host, 300 proposals, 36 epochs; the official code's Swin-FPN).
SWIN_ROWS = [
    PaperRow("Table 2", "Sparse R-CNN Swin-T", "sparse_rcnn_swin_T_300pro_3x.py", 110, None, 47.9),
    PaperRow("Table 2", "RecursiveDet Swin-T", "recursivedet_swin_T_300pro_3x.py", 58, None, 48.9),
    PaperRow("Table 2", "Sparse R-CNN Swin-B", "sparse_rcnn_swin_B_300pro_3x.py", 169, None, 52.0),
    PaperRow("Table 2", "RecursiveDet Swin-B", "recursivedet_swin_B_300pro_3x.py", 118, None, 53.1),
]

# Table 2 on the DiffusionDet host (projects/DiffusionDet; 500 proposals, 60 epochs, 1 DDIM step).
DIFFUSIONDET_ROWS = [
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

# Table 2 on the AdaMixer host (projects/AdaMixer; 300 queries, 36 epochs; no centerness PE, paper Sec. 4.2).
ADAMIXER_ROWS = [
    PaperRow("Table 2", "AdaMixer R50", "AdaMixer/adamixer_R50_300pro_3x.py", 135, None, 47.0),
    PaperRow(
        "Table 2", "RecursiveDet(AdaMixer) R50", "AdaMixer/recursivedet_adamixer_R50_300pro_3x.py", 43, None, 47.9
    ),
    PaperRow("Table 2", "AdaMixer R101", "AdaMixer/adamixer_R101_300pro_3x.py", 154, None, 48.0),
    PaperRow(
        "Table 2", "RecursiveDet(AdaMixer) R101", "AdaMixer/recursivedet_adamixer_R101_300pro_3x.py", 62, None, 48.9
    ),
]

# Measured with the official code (R50-FPN, 100 proposals, frozen stem and res2): exact targets.
OFFICIAL_PARAMETERS = {
    "ablations/table4_sparse_rcnn.py": 106_237_768,
    "ablations/table6_recursive_bbpe_cbpe.py": 54_612_476,
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
