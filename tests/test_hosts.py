"""The hosts' declarations (recursivedet.hosts): every project declares itself through the package's entry points,
and the library's tools (conversion, comparison, paper rows, export) find the hosts only there."""

from pathlib import Path

import pytest
from model_factory import tiny_diffusiondet

from recursivedet.analysis.benchmark import main as benchmark_main
from recursivedet.hosts import ENTRY_POINT_GROUP, Host, host_of_model, hosts, paper_rows
from recursivedet.model_zoo import config_names

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


def test_a_model_is_matched_to_its_host_and_a_host_without_export_says_why():
    model = tiny_diffusiondet()
    host = host_of_model(model)
    assert host is hosts()["DiffusionDet"] and "sampling" in host.export
    assert host_of_model(object()) is None
