"""One command per output folder, and an output folder that cannot be written, both reported in one line before
any expensive work; a study stopped with SIGTERM stops its training processes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from training_setup import TINY_CONFIG, run_cli, tiny_run_at

from recursivedet.engine.output_folder import LOCK_FILE, OutputFolderError, output_folder
from recursivedet.study.__main__ import worker_threads


def test_a_second_holder_is_refused_with_the_folder_and_the_first_process(tmp_path):
    folder = tmp_path / "out"
    with output_folder(folder, "first"):
        with pytest.raises(OutputFolderError) as info:
            with output_folder(folder, "second"):
                pass
    message = str(info.value)
    assert message.startswith(f"output folder {folder} is in use by process {os.getpid()} (first: ")
    assert message.endswith("wait for it to end, or choose another folder")
    with output_folder(folder, "third"):  # released with its holder
        pass


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda d: d.write_text("a file"), "cannot be created: a file of that name is there"),
        (lambda d: (d.parent / "file").write_text("") or None, None),
        (lambda d: (d.mkdir(), (d / LOCK_FILE).symlink_to(d.parent / "victim")), "a symlink is in place of its lock"),
    ],
)
def test_a_folder_that_cannot_be_written_is_named(tmp_path, make, expected):
    folder = tmp_path / "out"
    make(folder)
    if expected is None:  # a parent that is a file
        folder, expected = tmp_path / "file" / "out", "cannot be written: Not a directory"
    with pytest.raises(OutputFolderError, match=expected):
        with output_folder(folder):
            pass
    assert not (tmp_path / "victim").exists()  # nothing written through the link


@pytest.mark.slow
def test_train_net_refuses_a_folder_another_run_writes_into(tmp_path):
    with tiny_run_at(tmp_path) as root:
        output = root / "output"
        with output_folder(output, "the other run"):
            result = run_cli("--config-file", str(TINY_CONFIG), "train.max_iter=1", f"train.output_dir={output}")
        assert result.returncode == 2
        assert result.stderr.strip().splitlines()[-1] == (
            f"error: output folder {output} is in use by process {os.getpid()} (the other run: "
            + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300]
            + "); wait for it to end, or choose another folder"
        )
        assert not (output / "log.txt").exists()  # nothing was set up, nothing trained
        full = tmp_path / "file"
        full.write_text("")
        result = run_cli("--config-file", str(TINY_CONFIG), "train.max_iter=1", f"train.output_dir={full}/out")
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert (
            result.stderr.strip().splitlines()[-1]
            == f"error: output folder {full}/out cannot be written: Not a directory"
        )


def test_study_runs_take_the_users_thread_count(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert worker_threads(1) == max(1, os.cpu_count() or 1) and worker_threads(100) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert worker_threads(2) == 3


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="needs /proc to find the worker processes")
def test_a_study_stopped_with_sigterm_stops_its_runs_and_a_second_study_is_refused(tmp_path):
    from test_study import STUDY_OPTS

    output = tmp_path / "study"
    command = [sys.executable, "-m", "recursivedet.study", "--rows", "recst", "--seeds", "0", "--iters", "100000"]
    command += ["--output", str(output), *STUDY_OPTS]
    study = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers = set()
        while not workers and time.monotonic() < deadline and study.poll() is None:
            time.sleep(0.5)
            workers = _children(study.pid)
        assert workers, study.communicate(timeout=30)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2 and f"output folder {output} is in use by process {study.pid}" in second.stderr
        study.send_signal(signal.SIGTERM)
        study.wait(timeout=120)
        for pid in workers:
            assert not Path(f"/proc/{pid}").exists(), f"training process {pid} outlived the study"
    finally:
        if study.poll() is None:
            study.kill()
