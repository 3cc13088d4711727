"""The dialogue between a comparison with an official code (``python -m recursivedet.analysis.compare``) and its
worker processes.

A worker is the comparison's command started with ``--worker WORK`` in the scratch directory ``WORK``: the
official inference worker, or with ``--train-worker ours|official`` a training worker. Data goes through
files in ``WORK``; the worker's stdout carries only the dialogue, one line each, starting with "@@side_by_side":

- "ready" once its outputs are written (before it serves timing requests);
- per request line on its stdin (the name of a timed part): "sample <wall s> <CPU s>"; any other line or
  the end of stdin ends the requests;
- a training worker also answers "loss <first-step total loss>" first and "memory <peak MB> <MB before the
  steps>" after the requests.

Its stderr goes to ``WORK/<name>.log``, shown when it ends before answering.
"""

import subprocess
import sys
from pathlib import Path

from recursivedet.analysis.measure import sample_seconds

READY, SAMPLE = "@@side_by_side ready", "@@side_by_side sample"
LOSS, MEMORY = "@@side_by_side loss", "@@side_by_side memory"


class WorkerFailed(RuntimeError):
    """A worker process ended before answering. ``log``: its stderr; ``status``: the comparison's exit status
    (2 when the worker stopped on a setup error or said nothing, else the worker's own)."""

    def __init__(self, log: str, status: int):
        super().__init__(log)
        self.log, self.status = log, status


def serve(parts: dict) -> None:
    """Worker side: say "ready", then run one named part per line read from stdin and answer its times."""
    print(READY, flush=True)
    for line in sys.stdin:
        name = line.strip()
        if name not in parts:
            break
        wall, cpu = sample_seconds(parts[name])
        print(f"{SAMPLE} {wall!r} {cpu!r}", flush=True)


class WorkerProcess:
    """Comparing side: ``python -m module --worker work *role *argv`` started in ``work``; ``role`` adds the
    training options, ``argv`` the comparison's settings."""

    def __init__(self, module: str, argv: list[str], work: Path, name: str, role: tuple[str, ...] = ()):
        command = [sys.executable, "-m", module, "--worker", str(work), *role, *argv]
        self.log = open(work / f"{name}.log", "w+")  # its stderr; lives as long as the process
        # Its working directory is the scratch one: the official code never runs from inside this project.
        self.proc = subprocess.Popen(
            command, cwd=work, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True
        )

    def expect(self, prefix: str) -> str:
        """The rest of the worker's next line starting with ``prefix``; :class:`WorkerFailed` if it ends first."""
        for line in self.proc.stdout:
            if line.startswith(prefix):
                return line[len(prefix) :].strip()
        code = self.proc.wait()
        self.log.seek(0)
        raise WorkerFailed(self.log.read(), 2 if code in (0, 2) else code)

    def sample(self, part: str) -> tuple[float, float]:
        """(wall, CPU) seconds of one run of ``part`` in the worker."""
        self.proc.stdin.write(part + "\n")
        self.proc.stdin.flush()
        wall, cpu = self.expect(SAMPLE).split()
        return float(wall), float(cpu)

    def end_requests(self) -> None:
        self.proc.stdin.close()

    def close(self) -> None:
        """End the requests and wait for the worker (kill it after 60 s: e.g. still in a long training step
        after the other side failed)."""
        if self.proc.poll() is None:
            if not self.proc.stdin.closed:
                self.proc.stdin.close()  # the worker leaves its loop and exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
