"""The hosts' declarations (recursivedet.hosts): every project declares itself through the package's entry points,
and the library's tools (conversion, comparison, paper rows, export) find the hosts only there."""

from pathlib import Path

import pytest
from detectron2.config.instantiate import _convert_target_to_string, locate
from model_factory import tiny_diffusiondet
from omegaconf import MISSING, OmegaConf

from recursivedet.analysis.benchmark import main as benchmark_main
from recursivedet.engine import ConfigOverrideError
from recursivedet.engine.cli import check_overrides
from recursivedet.hosts import ENTRY_POINT_GROUP, Host, host_of_model, hosts, paper_rows
from recursivedet.model_zoo import config_names, get_config
from recursivedet.switches import PAPER_SWITCHES

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def test_every_project_with_a_declaration_is_an_entry_point():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][ENTRY_POINT_GROUP]
    folders = sorted(p.parent.name for p in (ROOT / "projects").glob("*/host.py"))
    assert sorted(declared) == folders == sorted(hosts())
    assert all(isinstance(h, Host) and h.name == name for name, h in hosts().items())


def test_every_paper_row_names_a_config_that_exists():
    names = set(config_names())
    rows = paper_rows()
    assert {r.table for r in rows} == {"Table 2", "Table 4", "Table 5", "Table 6"}
    assert not [r.config for r in rows if r.config not in names]
    assert len(paper_rows("main")) == 4 * len(hosts())  # R50 and R101, host alone and with RecursiveDet


def test_the_benchmark_offers_the_comparisons_the_hosts_declare(capsys):
    with pytest.raises(SystemExit):
        benchmark_main(["--help"])
    usage = capsys.readouterr().out
    archs = [a for h in hosts().values() if h.comparison for a in h.comparison.archs]
    assert sorted(archs) == ["adamixer", "diffusiondet", "recursivedet", "sparse_rcnn"]
    assert all(a in usage for a in archs)


def test_a_model_is_matched_to_its_host_and_its_exportable_graph():
    model = tiny_diffusiondet()
    host = host_of_model(model)
    assert host is hosts()["DiffusionDet"] and type(host.export(model)).__name__ == "DiffusionDetGraph"
    assert host_of_model(object()) is None


def type_name(cfg) -> str:
    target = cfg.model._target_
    return _convert_target_to_string(locate(target) if isinstance(target, str) else target)


HOST_CONFIGS = {
    "SparseRCNN": "SparseRCNN/recursivedet_R50_300pro_3x.py",
    "DiffusionDet": "DiffusionDet/recursivedet_diffusiondet_R50_500pro_60ep.py",
    "AdaMixer": "AdaMixer/recursivedet_adamixer_R50_300pro_3x.py",
}


@pytest.mark.parametrize("name", sorted(HOST_CONFIGS))
def test_every_paper_switch_is_a_key_of_the_hosts_configs_or_refused_with_a_reason(name):
    cfg = get_config(HOST_CONFIGS[name])
    declared = hosts()[name].inapplicable_switches
    for _, _, override in PAPER_SWITCHES:
        key = override.split("=")[0]
        present = OmegaConf.select(cfg, key, default=MISSING) is not MISSING
        assert present != (key in declared), key  # one or the other
        if key in declared:
            with pytest.raises(ConfigOverrideError) as info:
                check_overrides(cfg, [override])
            assert str(info.value) == f"override {override!r}: {key} does not apply to {name} " + (
                f"({type_name(cfg)}): {declared[key]}"
            )
    assert set(declared) <= {o.split("=")[0] for _, _, o in PAPER_SWITCHES}
