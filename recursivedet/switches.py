"""The paper's ablation factors as config overrides, for ``train_net.py --help``, docs/model.md and tests.

Each entry: (factor, paper term, override(s) on the command line). Apply them to any config, e.g.
``python train_net.py --config-file SparseRCNN/recursivedet_R50_100pro_3x.py model.decoder.stage_sharing=all``.
The REGO switches (paper 2, REGO, CVPR 2022) set ``model.rego``, present in every config with 0 stages (off):
``model.rego.num_stages=3`` adds REGO to any config, ``model.rego.num_stages=0`` removes it; the other REGO
switches act when it has stages.
"""

PAPER_SWITCHES = [
    ("stage parameter sharing: none", "Sparse R-CNN (Table 4 row 1)", "model.decoder.stage_sharing=none"),
    ("stage parameter sharing: all stages", "RecSt (Sec. 3.2, Table 4)", "model.decoder.stage_sharing=all"),
    (
        "stage parameter sharing: all but the first",
        "RecSt-dagger (Sec. 3.2, Table 4)",
        "model.decoder.stage_sharing=all_but_first",
    ),
    ("dynamic-conv passes per stage", "RecDy (Sec. 3.2, Table 4)", "model.decoder.dynamic_passes=2"),
    (
        "dynamic-conv passes of the first stage",
        "official code: 1 in the independent first stage",
        "model.decoder.first_stage_dynamic_passes=1",
    ),
    (
        "box PE in self-attention",
        "bb-PE (Sec. 3.3, Fig. 2b, Table 6)",
        "model.decoder.stage.box_pe_self_attention=True",
    ),
    ("box PE in the dynamic conv", "bb-PE (Eq. 4-5, Fig. 2c, Table 6)", "model.decoder.stage.box_pe_dynamic_conv=True"),
    ("centerness PE", "cb-PE (Eq. 6, Table 5, Table 6)", "model.decoder.stage.centerness=static|learnable|adjust|none"),
    (
        "form of the dynamic-conv box PE",
        "per-channel (acts; default) or official (removed by the dynamic conv's LayerNorm, with its centerness)",
        "model.decoder.stage.dynamic_conv_pe_form=official|per_channel",
    ),
    ("number of stages", "T (Sec. 3.2, Fig. 4)", "model.decoder.num_stages=6"),
    (
        "number of stages at inference",
        "T at test time (Fig. 4; more than trained with shared stages)",
        "model.decoder.inference_stages=8",
    ),
    ("number of proposals", "N (Sec. 3.1; 100 ablations, 300 Table 2)", "model.num_proposals=300"),
    ("deep supervision", "losses on every stage (Sec. 3.2)", "model.deep_supervision=True"),
    (
        "box refinement",
        "inverse-sigmoid (RecursiveDet code) or deltas (Sparse R-CNN code)",
        "model.decoder.stage.box_refinement=sigmoid|deltas",
    ),
    (
        "L1 box coordinates",
        "(cx, cy, w, h) (RecursiveDet code) or (x1, y1, x2, y2) (Sparse R-CNN code)",
        "model.criterion.l1_box_format=cxcywh|xyxy",
    ),
    ("box-delta init", "xavier (official) or zero (identity start)", "model.decoder.box_delta_init=zero"),
    (
        "initial proposal boxes",
        "whole image (official) or a grid (Sparse R-CNN 'Grid')",
        "model.proposal_box_init=grid",
    ),
    ("REGO glimpse stages", "REGO: K stages, alpha = (K, ..., 1) (REGO Sec. 4, Table 2)", "model.rego.num_stages=3"),
    ("REGO glimpse scale", "scale of every alpha (REGO Table 3)", "model.rego.glimpse_scale=1.5"),
    ("REGO enlargement ratios", "alpha of REGO Eq. 7 (Sec. 5.3: 1, 1, 1)", "model.rego.alphas=[1,1,1]"),
    (
        "REGO auxiliary losses",
        "losses on each REGO stage's earlier layers (REGO Sec. 4.3; unweighted in the official code)",
        "model.rego.aux_losses=True",
    ),
    (
        "REGO at inference",
        "trained with REGO, inferred without (REGO Appendix A.2, Table 4)",
        "model.rego.at_inference=False",
    ),
]


def switches_help() -> str:
    """The switches as an aligned text block (for ``--help``)."""
    width = max(len(f) for f, _, _ in PAPER_SWITCHES)
    lines = ["paper switches (append as overrides):"]
    for factor, term, override in PAPER_SWITCHES:
        lines.append(f"  {factor:<{width}}  {override}\n  {'':<{width}}  ({term})")
    return "\n".join(lines)
