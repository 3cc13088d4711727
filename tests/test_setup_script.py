"""scripts/setup.sh refuses unusable interpreters with a clear message (before touching anything)."""

import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def _run(env_extra, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "RECURSIVEDET_VENV": str(tmp_path / "venv")}
    env.update(env_extra)
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.slow
def test_old_python_is_refused(tmp_path):
    fake = tmp_path / "python3.9"
    fake.write_text('#!/bin/sh\ncase "$2" in *print*) echo 3.9.18;; *) exit 1;; esac\n')
    fake.chmod(0o755)
    result = _run({"PYTHON": str(fake)}, tmp_path)
    assert result.returncode == 1
    assert "Python 3.10 or newer is required" in result.stderr and "3.9.18" in result.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.slow
def test_missing_interpreters_are_named(tmp_path):
    result = _run({"PYTHON": "no-such-python"}, tmp_path)
    assert result.returncode == 1 and "no 'no-such-python' on PATH" in result.stderr
    result = _run({"RECURSIVEDET_PYTHON": str(tmp_path / "nope")}, tmp_path)
    assert result.returncode == 1 and "is not an executable Python interpreter" in result.stderr
