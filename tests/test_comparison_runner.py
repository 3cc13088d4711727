"""The one comparison command (``python -m recursivedet.analysis.compare``) runs every host's comparison with its
official code: it finds the hosts through their declarations, refuses bad input with one line, hands every worker
process the settings of the comparison unchanged, and the hosts' own ``side_by_side`` commands are the same
command."""

from pathlib import Path

import pytest

from recursivedet.analysis import compare as compare_command
from recursivedet.analysis.comparison_adapter import ComparisonAdapter
from recursivedet.analysis.comparison_report import print_report
from recursivedet.analysis.comparison_session import compare, make_settings
from recursivedet.errors import UserError, run_command
from recursivedet.hosts import hosts

COMPARED = sorted(name for name, host in hosts().items() if host.comparison is not None)


def _run(argv) -> int:
    with pytest.raises(SystemExit) as exit_info:
        run_command(lambda: compare_command.main(argv))
    return exit_info.value.code


def test_every_host_with_a_comparison_has_an_adapter_of_its_own():
    assert COMPARED == ["AdaMixer", "DiffusionDet", "SparseRCNN"]
    for name in COMPARED:
        adapter = compare_command.adapter(name)
        assert isinstance(adapter, ComparisonAdapter) and adapter.host == name
        assert adapter.archs == hosts()[name].comparison.archs


def test_an_unknown_host_is_refused_with_the_known_ones(capsys):
    assert _run(["--host", "NoSuchHost", "--official-root", "x"]) == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'NoSuchHost'" in err and all(f"'{name}'" in err for name in COMPARED)


def test_a_host_comparing_with_several_codes_needs_arch(tmp_path, capsys):
    assert _run(["--host", "SparseRCNN", "--official-root", str(tmp_path)]) == 2
    assert "required: --arch" in capsys.readouterr().err
    with pytest.raises(UserError, match="--arch of SparseRCNN must be one of recursivedet, sparse_rcnn"):
        make_settings(
            compare_command.adapter("SparseRCNN"), str(tmp_path), "adamixer", seed=0, threads=1, timing_runs=0
        )


@pytest.mark.parametrize(
    ("host", "argv", "message"),
    [
        ("SparseRCNN", ["--arch", "sparse_rcnn"], "is not a checkout of the official code"),
        ("DiffusionDet", [], "is not a checkout of the official DiffusionDet code"),
        ("AdaMixer", [], "is not a checkout of the official AdaMixer code"),
    ],
)
def test_a_path_that_is_not_the_official_checkout_is_refused(host, argv, message, tmp_path, capsys):
    assert _run(["--host", host, "--official-root", str(tmp_path), *argv]) == 2
    assert f"error: {tmp_path} {message}" in capsys.readouterr().err


def test_bad_host_options_and_proposals_are_refused(tmp_path, monkeypatch):
    adapter = compare_command.adapter("DiffusionDet")
    monkeypatch.setattr(type(adapter), "is_checkout", lambda self, root: True)
    with pytest.raises(UserError, match=r"--steps must be DDIM step counts >= 1, got \[0\]"):
        compare(adapter, str(tmp_path), steps=[0])
    with pytest.raises(UserError, match="--proposals must be at least 1, got 0"):
        compare(adapter, str(tmp_path), proposals=0)
    with pytest.raises(TypeError, match="no option dtype"):
        compare(adapter, str(tmp_path), dtype="float64")


@pytest.mark.parametrize(
    ("host", "arch", "options"),
    [
        ("SparseRCNN", "recursivedet", {"dtype": "float64"}),  # implies the dense RoI PE
        ("SparseRCNN", "sparse_rcnn", {"dense_roi_pe": True}),
        ("DiffusionDet", None, {"steps": [4, 1, 4]}),
        ("AdaMixer", None, {}),
    ],
)
@pytest.mark.parametrize("role", [(), ("--train-worker", "official")])
def test_worker_processes_receive_the_settings_of_the_comparison(host, arch, options, role, tmp_path, monkeypatch):
    adapter = compare_command.adapter(host)
    settings = make_settings(adapter, str(tmp_path), arch, proposals=7, seed=3, threads=1, timing_runs=2, **options)
    received = []
    monkeypatch.setattr(type(adapter), "official_worker", lambda self, s, work: received.append((s, work, None)) or 0)
    monkeypatch.setattr(
        type(adapter), "training_worker", lambda self, s, work, side: received.append((s, work, side)) or 0
    )
    assert compare_command.main(["--worker", str(tmp_path), *role, *settings.argv()]) == 0
    ((got, work, side),) = received
    assert got == settings and work == Path(tmp_path) and side == (role[1] if role else None)
    if host == "SparseRCNN":
        assert got.dense_roi_pe is (arch == "recursivedet" or options.get("dense_roi_pe", False))
    if host == "DiffusionDet":
        assert got.steps == (1, 4)


def test_the_report_ends_with_the_verdict(capsys):
    image = {"height": 4, "width": 6}
    printed = []
    print_report({"images": [image], "agree": False}, "headline", printed.append)
    out = capsys.readouterr().out
    assert printed == [[image]] and out.startswith("headline\n") and out.rstrip().endswith("DISAGREE")
