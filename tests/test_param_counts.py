"""Parameter counts of every paper row's config against the paper and the official code."""

import pytest
from detectron2.config import instantiate

from recursivedet.analysis.model_cost import model_cost, stage_breakdown
from recursivedet.analysis.paper_rows import (
    OFFICIAL_PARAMETERS,
    OFFICIAL_STAGE_PARAMETERS,
)
from recursivedet.model_zoo import get_config
from recursivedet.projects.SparseRCNN.host import ABLATION_ROWS, MAIN_ROWS

ROWS_WITH_PARAMS = [r for r in ABLATION_ROWS + MAIN_ROWS if r.params_m is not None]


# The official code's form of the dynamic-conv box PE; the default per-channel form adds W (d x c) per stage module.
OFFICIAL_FORM = ("model.decoder.stage.dynamic_conv_pe_form=official",)


@pytest.fixture(scope="module")
def costs():
    cache = {}

    def get(config, overrides=()):
        if (config, overrides) not in cache:
            cache[config, overrides] = model_cost(config, with_flops=False, overrides=overrides)
        return cache[config, overrides]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS_WITH_PARAMS, ids=lambda r: f"{r.table}-{r.label}")
def test_parameters_within_one_percent_of_the_paper(row, costs):
    params_m = costs(row.config)["params"] / 1e6
    assert abs(params_m - row.params_m) / row.params_m < 0.01, (row.label, params_m, row.params_m)


@pytest.mark.slow
@pytest.mark.parametrize("config,expected", OFFICIAL_PARAMETERS.items())
def test_parameters_equal_the_official_code(config, expected, costs):
    overrides = OFFICIAL_FORM if "recursivedet" in config or "table6" in config else ()
    assert costs(config, overrides)["params"] == expected


@pytest.mark.slow
def test_the_per_channel_box_pe_adds_one_d_by_c_matrix_per_stage_module(costs):
    official = costs("SparseRCNN/ablations/table6_recursive_bbpe_cbpe.py", OFFICIAL_FORM)
    per_channel = costs("SparseRCNN/ablations/table6_recursive_bbpe_cbpe.py")
    assert per_channel["params"] - official["params"] == 2 * 64 * 256  # RecSt-dagger: 2 stage modules
    pe_added = [s["PE"] - o["PE"] for s, o in zip(per_channel["stage_modules"], official["stage_modules"], strict=True)]
    assert pe_added == [64 * 256] * 2


@pytest.mark.slow
def test_stage_parameters_equal_the_official_code(costs):
    sparse = costs("SparseRCNN/ablations/table4_sparse_rcnn.py")["stage_modules"]
    assert [s["Total"] for s in sparse] == [OFFICIAL_STAGE_PARAMETERS["sparse_rcnn"]] * 6
    recursive = costs("SparseRCNN/ablations/table6_recursive_bbpe_cbpe.py", OFFICIAL_FORM)["stage_modules"]
    assert [s["Total"] for s in recursive] == [OFFICIAL_STAGE_PARAMETERS["recursivedet"]] * 2
    assert recursive[0]["PE"] == OFFICIAL_STAGE_PARAMETERS["recursivedet_pe"]
    # Paper Table 1, Sparse R-CNN: MSA 0.3M, Dyn 8.4M, Out 3.2M, Head 0.3M, Others 1.0M, Total 13.2M.
    paper = {"MSA": 0.3, "Dyn": 8.4, "Out": 3.2, "Head": 0.3, "Others": 1.0, "Total": 13.2}
    # (Others is 1.05M here: the paper rounds it down.)
    assert all(abs(sparse[0][k] / 1e6 - v) < 0.06 for k, v in paper.items()), sparse[0]


def test_every_table_row_has_a_config_with_its_switches():
    switches = {
        "SparseRCNN/ablations/table4_recst.py": ("all", 1, None, False, False, "none"),
        "SparseRCNN/ablations/table4_recst_recdy.py": ("all", 2, None, False, False, "none"),
        "SparseRCNN/ablations/table4_recst_dagger_recdy.py": ("all_but_first", 2, 1, False, False, "none"),
        "SparseRCNN/ablations/table6_bbpe.py": ("none", 1, None, True, True, "none"),
        "SparseRCNN/ablations/table6_bbpe_cbpe.py": ("none", 1, None, True, True, "static"),
        "SparseRCNN/ablations/table6_recursive_bbpe.py": ("all_but_first", 2, 1, True, True, "none"),
        "SparseRCNN/ablations/table6_recursive_bbpe_cbpe.py": ("all_but_first", 2, 1, True, True, "static"),
        "SparseRCNN/ablations/table5_centerness_learnable.py": ("all_but_first", 2, 1, True, True, "learnable"),
        "SparseRCNN/ablations/table5_centerness_adjust.py": ("all_but_first", 2, 1, True, True, "adjust"),
        "SparseRCNN/ablations/table4_sparse_rcnn.py": ("none", 1, None, False, False, "none"),
    }
    assert {r.config for r in ABLATION_ROWS} == set(switches)
    for config, expected in switches.items():
        cfg = get_config(config)
        d = cfg.model.decoder
        got = (
            d.stage_sharing,
            d.dynamic_passes,
            d.first_stage_dynamic_passes,
            d.stage.box_pe_self_attention,
            d.stage.box_pe_dynamic_conv,
            d.stage.centerness,
        )
        assert got == expected, config
        assert cfg.model.num_proposals == 100 and d.num_stages == 6


def test_main_result_configs_use_300_proposals_and_the_crop():
    for row in MAIN_ROWS:
        cfg = get_config(row.config)
        assert cfg.model.num_proposals == 300
        assert cfg.dataloader.train.mapper.augmentations.random_crop
        assert cfg.train.max_iter == 270000


def test_breakdown_covers_every_parameter():
    cfg = get_config("SparseRCNN/ablations/table5_centerness_adjust.py")
    cfg.model.backbone.bottom_up.stages.depth = 18
    del cfg.model.backbone.bottom_up.stages.stride_in_1x1
    cfg.model.backbone.bottom_up.stem.out_channels = 64
    model = instantiate(cfg.model)
    stage = model.decoder.stages[1]
    counts = stage_breakdown(stage)
    assert counts["Total"] == sum(p.numel() for p in stage.parameters())
    # + adjust's offset Linear and the per-channel form's W (d x c)
    assert counts["PE"] == OFFICIAL_STAGE_PARAMETERS["recursivedet_pe"] + 256 * 2 + 2 + 64 * 256


def test_cost_table_of_named_configs_shows_their_paper_rows(capsys):
    """A paper row's config given by name (or path) prints with that row's label and figures; another config
    prints with its name."""
    from recursivedet.analysis.model_cost import main

    assert main(["SparseRCNN/ablations/table4_recst.py", "SparseRCNN/recursivedet_shapes_demo.py", "--no-flops"]) == 0
    lines = capsys.readouterr().out.splitlines()
    recst, demo = lines[3], lines[4]
    assert recst.startswith("Table 4") and "RecSt" in recst and " 40 " in recst
    assert "SparseRCNN/recursivedet_shapes_demo.py" in demo and not demo.startswith("Table")
