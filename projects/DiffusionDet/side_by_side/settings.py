"""What every process of one comparison builds its model from, and how a worker process is started."""

from dataclasses import dataclass
from pathlib import Path

from recursivedet.analysis.worker_process import WorkerProcess


@dataclass(frozen=True)
class Settings:
    """The settings of one comparison (``official_root`` absolute). ``steps``: the DDIM step counts compared."""

    official_root: str
    proposals: int
    steps: tuple[int, ...]
    seed: int
    threads: int
    timing_runs: int

    def argv(self) -> list[str]:
        """These settings as options of this package's command."""
        return [
            *("--official-root", self.official_root, "--proposals", str(self.proposals)),
            *("--steps", *map(str, self.steps), "--seed", str(self.seed), "--threads", str(self.threads)),
            *("--timing-runs", str(self.timing_runs)),
        ]

    def worker(self, work: Path, name: str, role: tuple[str, ...] = ()) -> WorkerProcess:
        """A worker process of this package's command with these settings
        (:mod:`recursivedet.analysis.worker_process`)."""
        return WorkerProcess(__package__, self.argv(), work, name, role)
