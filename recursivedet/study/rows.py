"""The rows a study trains: the paper's ablation rows by name, grouped by the table they reproduce, and rows of
the user's own (``NAME: key=value ...``).

A row is a config (None: the study's base config, the demo-size full RecursiveDet) and overrides. The paper rows
are stated as overrides of the full model, exactly as ``SparseRCNN/ablations/`` states them on the R50 config (a
test applies each row to ``SparseRCNN/recursivedet_R50_100pro_3x.py`` and compares it with that ablation config), so the
same switches are studied at demo size. Paper AP figures (COCO val, R50, 100 proposals) are listed beside
each row for the report; they are not reproduced at this scale, the ordering is what is compared.
"""

import re
from dataclasses import dataclass

from recursivedet.errors import UserError

__all__ = [
    "COMPARISONS",
    "Comparison",
    "DEFAULT_GROUPS",
    "GROUPS",
    "PAPER_ROWS",
    "REGO_BASELINES",
    "TABLE_PAPER_AP",
    "StudyRow",
    "StudyRowError",
    "parse_row",
    "select_rows",
]


class StudyRowError(UserError, ValueError):
    """An unknown row or group name, or a malformed ``--row``."""


@dataclass(frozen=True)
class StudyRow:
    """One trained variant of a study.

    Args:
        name: unique name (folder name of its runs): letters, digits, ``_``, ``-``.
        overrides: config overrides (``key=value``), applied after the study's own.
        config: config name or file; None = the study's base config.
        paper: what the row is in the papers (for the table).
        paper_ap: the paper's AP of the row, or None.
    """

    name: str
    overrides: tuple[str, ...] = ()
    config: str | None = None
    paper: str = ""
    paper_ap: float | None = None


_NOT_RECURSIVE = (
    "model.decoder.stage_sharing=none",
    "model.decoder.dynamic_passes=1",
    "model.decoder.first_stage_dynamic_passes=null",
)
_NO_PE = (
    "model.decoder.stage.box_pe_self_attention=False",
    "model.decoder.stage.box_pe_dynamic_conv=False",
    "model.decoder.stage.centerness=none",
)

# The full RecursiveDet (every switch on) is the base config itself: it has no overrides.
PAPER_ROWS = {
    row.name: row
    for row in (
        StudyRow(
            "sparse_rcnn",
            (
                *_NOT_RECURSIVE,
                *_NO_PE,
                # Sparse R-CNN's own box deltas and L1 coordinates (SparseRCNN/models/sparse_rcnn.py)
                "model.decoder.stage.box_refinement=deltas",
                "model.criterion.l1_box_format=xyxy",
            ),
            paper="Sparse R-CNN (Table 4 row 1, Table 6 row 1)",
            paper_ap=42.8,
        ),
        StudyRow(
            "recst",
            (
                "model.decoder.stage_sharing=all",
                "model.decoder.dynamic_passes=1",
                "model.decoder.first_stage_dynamic_passes=null",
                *_NO_PE,
            ),
            paper="RecSt (Table 4 row 2)",
            paper_ap=42.4,
        ),
        StudyRow(
            "recst_recdy",
            (
                "model.decoder.stage_sharing=all",
                "model.decoder.dynamic_passes=2",
                "model.decoder.first_stage_dynamic_passes=null",
                *_NO_PE,
            ),
            paper="RecSt + RecDy (Table 4 row 3)",
            paper_ap=43.6,
        ),
        StudyRow(
            "recst_dagger_recdy",
            _NO_PE,
            paper="RecSt-dagger + RecDy = Recursive (Table 4 row 4, Table 6 row 2)",
            paper_ap=43.9,
        ),
        StudyRow(
            "bbpe",
            (*_NOT_RECURSIVE, "model.decoder.stage.centerness=none"),
            paper="bb-PE (Table 6 row 3)",
            paper_ap=43.1,
        ),
        StudyRow(
            "bbpe_cbpe",
            (*_NOT_RECURSIVE, "model.decoder.stage.centerness=static"),
            paper="bb-PE + cb-PE (Table 6 row 4)",
            paper_ap=43.4,
        ),
        StudyRow(
            "recursive_bbpe",
            ("model.decoder.stage.centerness=none",),
            paper="Recursive + bb-PE (Table 6 row 5)",
            paper_ap=44.4,
        ),
        StudyRow(
            "recursivedet",
            (),
            paper="RecursiveDet: Recursive + bb-PE + cb-PE static (Table 6 row 6, Table 5 static)",
            paper_ap=45.2,
        ),
        StudyRow(
            "centerness_learnable",
            ("model.decoder.stage.centerness=learnable",),
            paper="cb-PE learnable (Table 5)",
            paper_ap=44.9,
        ),
        StudyRow(
            "centerness_adjust",
            ("model.decoder.stage.centerness=adjust",),
            paper="cb-PE adjust (Table 5)",
            paper_ap=44.5,
        ),
        StudyRow(
            "recursivedet_rego",
            ("model.rego.num_stages=3",),
            paper="RecursiveDet + REGO, 3 stages, alpha (3, 2, 1) (REGO Table 2; evaluated with and without "
            "REGO, REGO Appendix Table 4)",
        ),
        # The positional encodings one at a time on Recursive (RecSt-dagger + RecDy), in the per-channel form
        # that acts, and the official form's rows: the same function as bb-PE in self-attention alone (the
        # official dynamic-conv term and any centerness on it are removed by a LayerNorm), so each of them
        # and pe_sa is an A/A pair whose difference is the study's noise.
        StudyRow(
            "pe_sa",
            _NO_PE[1:],
            paper="Recursive + bb-PE in self-attention only (Fig. 2b)",
        ),
        StudyRow(
            "pe_sa_dc",
            ("model.decoder.stage.centerness=none",),
            paper="Recursive + bb-PE in self-attention and dynamic conv, per-channel (Table 6 row 5)",
            paper_ap=44.4,
        ),
        StudyRow(
            "pe_sa_dc_official",
            ("model.decoder.stage.centerness=none", "model.decoder.stage.dynamic_conv_pe_form=official"),
            paper="as pe_sa_dc in the official form: the function of pe_sa (A/A)",
        ),
        StudyRow(
            "pe_cb_static_official",
            ("model.decoder.stage.dynamic_conv_pe_form=official",),
            paper="RecursiveDet in the official form: the function of pe_sa (A/A)",
        ),
        # The other hosts of paper Table 2 and Fig. 3, at their own demo sizes.
        StudyRow(
            "diffusiondet",
            config="DiffusionDet/diffusiondet_shapes_demo.py",
            paper="DiffusionDet (Table 2, Fig. 3)",
            paper_ap=45.8,
        ),
        StudyRow(
            "recursivedet_diffusiondet",
            config="DiffusionDet/recursivedet_diffusiondet_shapes_demo.py",
            paper="RecursiveDet (DiffusionDet) (Table 2, Fig. 3)",
            paper_ap=47.1,
        ),
        StudyRow(
            "recursivedet_diffusiondet_no_pe",
            _NO_PE,
            config="DiffusionDet/recursivedet_diffusiondet_shapes_demo.py",
            paper="RecursiveDet (DiffusionDet) without bb-PE and cb-PE",
        ),
        StudyRow(
            "adamixer",
            config="AdaMixer/adamixer_shapes_demo.py",
            paper="AdaMixer (Table 2, Fig. 3)",
            paper_ap=47.0,
        ),
        StudyRow(
            "recursivedet_adamixer",
            config="AdaMixer/recursivedet_adamixer_shapes_demo.py",
            paper="RecursiveDet (AdaMixer) (Table 2, Fig. 3)",
            paper_ap=47.9,
        ),
    )
}

# Each group is one table of the report, its rows in the paper's order.
GROUPS = {
    "table4": ("sparse_rcnn", "recst", "recst_recdy", "recst_dagger_recdy"),
    "table5": ("recursivedet", "centerness_learnable", "centerness_adjust"),
    "table6": ("sparse_rcnn", "recst_dagger_recdy", "bbpe", "bbpe_cbpe", "recursive_bbpe", "recursivedet"),
    "rego": ("recursivedet", "recursivedet_rego"),
    # The positional encodings that act, one switch at a time, with the official form as A/A control.
    "pe": (
        "recst_dagger_recdy",
        "pe_sa",
        "pe_sa_dc",
        "pe_sa_dc_official",
        "recursivedet",
        "pe_cb_static_official",
        "centerness_learnable",
        "centerness_adjust",
    ),
    "pe_diffusiondet": ("recursivedet_diffusiondet_no_pe", "recursivedet_diffusiondet"),
    "hosts": (
        "sparse_rcnn",
        "recursivedet",
        "diffusiondet",
        "recursivedet_diffusiondet",
        "adamixer",
        "recursivedet_adamixer",
    ),
}


@dataclass(frozen=True)
class Comparison:
    """A claim tested by paired seeds: ``row`` against ``baseline``.

    Args:
        claim: what the difference tests, e.g. "bb-PE (Table 6 row 5 - row 2)".
        paper_delta: the paper's AP difference; 0.0 for an A/A control (two forms of one function), whose
            interval shows the study's noise; None where the paper gives none.
    """

    row: str
    baseline: str
    claim: str
    paper_delta: float | None = None


# Per table, the paired comparisons its report states (AP difference, seed by seed).
COMPARISONS = {
    "pe": (
        Comparison("pe_sa", "recst_dagger_recdy", "bb-PE in self-attention, on Recursive"),
        Comparison("pe_sa_dc", "pe_sa", "bb-PE in the dynamic conv (per-channel), on top"),
        Comparison("pe_sa_dc", "recst_dagger_recdy", "bb-PE (Table 6 row 5 - row 2)", 0.5),
        Comparison("recursivedet", "pe_sa_dc", "cb-PE static (Table 6 row 6 - row 5)", 0.8),
        Comparison("centerness_learnable", "recursivedet", "cb-PE learnable - static (Table 5)", -0.3),
        Comparison("centerness_adjust", "recursivedet", "cb-PE adjust - static (Table 5)", -0.7),
        Comparison("pe_sa_dc_official", "pe_sa", "A/A: official dynamic-conv PE (inert) - none", 0.0),
        Comparison("pe_cb_static_official", "pe_sa", "A/A: official dynamic-conv PE + cb-PE (inert) - none", 0.0),
        Comparison("pe_sa_dc", "pe_sa_dc_official", "per-channel - official form of the dynamic-conv PE"),
        Comparison("recursivedet", "pe_cb_static_official", "per-channel - official form, with cb-PE"),
    ),
    "pe_diffusiondet": (
        Comparison(
            "recursivedet_diffusiondet",
            "recursivedet_diffusiondet_no_pe",
            "bb-PE + cb-PE on RecursiveDet (DiffusionDet)",
        ),
    ),
}
# A REGO row -> the same model without REGO (REGO Appendix Table 4's baseline).
REGO_BASELINES = {"recursivedet_rego": "recursivedet"}
# Where a table quotes another AP for a row than its own paper row: Table 2's Sparse R-CNN host (300 proposals).
TABLE_PAPER_AP = {"hosts": {"sparse_rcnn": 45.0, "recursivedet": 46.5}}
# The study of docs/study.md: the paper's ablation tables and REGO on the Sparse R-CNN host.
DEFAULT_GROUPS = ("table4", "table5", "table6", "rego")

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_row(text: str) -> StudyRow:
    """A row of the user's own: ``"NAME: key=value key=value ..."`` (overrides of the base config; a
    ``config=NAME`` item picks another config, e.g. ``"deep: model.decoder.num_stages=8"``)."""
    name, sep, rest = text.partition(":")
    name = name.strip()
    if not sep or not _NAME.match(name):
        raise StudyRowError(
            f"--row {text!r}: expected 'NAME: key=value ...' with a NAME of letters, digits, '_' or '-'"
        )
    overrides, config = [], None
    for item in rest.split():
        if "=" not in item:
            raise StudyRowError(f"--row {text!r}: {item!r} is not a key=value override")
        if item.startswith("config="):
            config = item.partition("=")[2]
        else:
            overrides.append(item)
    return StudyRow(name, tuple(overrides), config, paper="user row")


def select_rows(names: list[str], own: list[StudyRow]) -> tuple[list[StudyRow], dict[str, tuple[str, ...]]]:
    """The rows to train (each once, in first-mention order) and the tables to report, from group and row
    names (``all``: every group) and the user's own rows (one table "own")."""
    tables: dict[str, tuple[str, ...]] = {}
    for name in names:
        if name == "all":
            tables.update(GROUPS)
        elif name in GROUPS:
            tables[name] = GROUPS[name]
        elif name in PAPER_ROWS:
            tables.setdefault("rows", ())
            tables["rows"] += (name,)
        else:
            known = ", ".join([*GROUPS, "all", *PAPER_ROWS])
            raise StudyRowError(f"--rows: no group or row named {name!r}; known: {known}")
    rows = {}
    for table in tables.values():
        for name in table:
            rows.setdefault(name, PAPER_ROWS[name])
    for row in own:
        if row.name in rows:
            raise StudyRowError(f"--row {row.name!r}: a row of that name is already in the study")
        rows[row.name] = row
    if own:
        tables["own"] = tuple(r.name for r in own)
    if not rows:
        raise StudyRowError("the study has no rows: give --rows and/or --row")
    return list(rows.values()), tables
