"""The comparison with the official AdaMixer code: a path that is not its checkout is refused with one line;
with a checkout (``RECURSIVEDET_ADAMIXER_OFFICIAL`` pointing at MCG-NJU/AdaMixer, and mmcv 1.3 importable) the
two codes give the same stage outputs, detections and first training-step loss from the same weights."""

import importlib.util
import os
from pathlib import Path

import pytest

from recursivedet.analysis import benchmark
from recursivedet.errors import run_command
from recursivedet.projects.AdaMixer.side_by_side import OfficialCheckoutError, compare
from recursivedet.projects.AdaMixer.side_by_side.__main__ import main as side_by_side_main
from recursivedet.projects.AdaMixer.side_by_side.official_import import OFFICIAL_CONFIG

OFFICIAL_ROOT = os.environ.get("RECURSIVEDET_ADAMIXER_OFFICIAL", "")


def test_compare_refuses_a_path_that_is_not_an_official_checkout(tmp_path):
    with pytest.raises(OfficialCheckoutError, match="is not a checkout of the official AdaMixer code"):
        compare(official_root=str(tmp_path))


@pytest.mark.parametrize(
    "argv",
    [
        lambda root: side_by_side_main(["--official-root", root]),
        lambda root: benchmark.main(["--official-root", root, "--arch", "adamixer"]),
    ],
    ids=["side_by_side", "benchmark"],
)
def test_commands_refuse_a_path_that_is_not_an_official_checkout(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_command(lambda: argv(str(tmp_path)))
    assert exit_info.value.code == 2
    assert f"error: {tmp_path} is not a checkout of the official AdaMixer code" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(
    not (OFFICIAL_ROOT and (Path(OFFICIAL_ROOT) / OFFICIAL_CONFIG).is_file() and importlib.util.find_spec("mmcv")),
    reason="needs the official AdaMixer checkout in $RECURSIVEDET_ADAMIXER_OFFICIAL and mmcv 1.3",
)
def test_same_outputs_and_first_loss_as_the_official_code():
    report = compare(
        OFFICIAL_ROOT,
        proposals=20,
        image_sizes=[(192, 256)],
        num_images=2,
        threads=1,
        timing_runs=0,
        train_runs=1,
        train_size=(128, 160),
    )
    assert report["agree"], report
