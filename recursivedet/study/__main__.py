"""The study command: train and evaluate rows x seeds at one budget, then write tables and plots.

    python -m recursivedet.study [--rows table4 table5 table6 rego] [--row "NAME: key=value ..."]
        [--seeds 0 1 2] [--iters 200] [--output output/study] [--jobs 2] [key=value ...]

Rows are the paper's by name or group (``table4``, ``table5``, ``table6``, ``rego``, ``hosts``, ``all``; see
:mod:`recursivedet.study.rows`) and rows of your own. Trailing ``key=value`` overrides apply to every run, e.g.
``dataloader.train.dataset.names=my_train dataloader.test.dataset.names=my_val`` for a registered dataset.
Each run trains in a process of its own and is complete when its ``result.json`` exists: running the same
command again skips complete runs and resumes an interrupted one from its last checkpoint. The report
(``table.md``, ``table.json``, ``plots/*.png``) is rewritten after every run; ``--report`` only rewrites it.
Exit status: 0 when every run completed, 1 when some failed (their logs are named), 2 for a wrong argument.
"""

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

from recursivedet.engine import ConfigOverrideError, load_config
from recursivedet.engine.cli import int_at_least
from recursivedet.engine.output_folder import output_folder
from recursivedet.errors import UserError, run_command
from recursivedet.export import parse_score
from recursivedet.model_zoo import get_config_file

from .plots import draw_plots
from .report import study_tables, tables_markdown
from .rows import DEFAULT_GROUPS, PAPER_ROWS, REGO_BASELINES, StudyRow, StudyRowError, parse_row, select_rows
from .run import RESULT_FILE, SPEC_FILE

BASE_CONFIG = "SparseRCNN/recursivedet_shapes_demo.py"
SETTINGS_FILE = "study.json"


class StudyError(UserError, RuntimeError):
    """An output folder holding another study's runs, or some other problem with the study as a whole."""


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recursivedet.study",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--rows", nargs="+", help=f"groups or row names ({' '.join(DEFAULT_GROUPS)})")
    parser.add_argument("--row", action="append", default=[], type=parse_row, help='"NAME: key=value ..."')
    parser.add_argument("--config-file", default=BASE_CONFIG, help=f"base config of the rows ({BASE_CONFIG})")
    parser.add_argument("--seeds", nargs="+", type=int, help="train.seed of each run (0 1 2)")
    parser.add_argument("--iters", type=int_at_least(1), default=200, help="training iterations of every run (200)")
    parser.add_argument("--eval-points", type=int_at_least(1), default=4, help="evaluations per run for the curves (4)")
    parser.add_argument(
        "--max-stages", type=int_at_least(1), default=8, help="deepest inference of shared decoders (8; Fig. 4)"
    )
    parser.add_argument(
        "--score-threshold", type=parse_score, default=0.3, help="score of the detections counted in the IoU histogram"
    )
    parser.add_argument("--output", default="output/study", help="study folder (output/study)")
    parser.add_argument("--jobs", type=int_at_least(1), default=1, help="runs at once, sharing the CPU cores (1)")
    parser.add_argument(
        "--report",
        action="store_true",
        help="only rewrite the report from completed runs, with the study's own settings (its rows unless --rows "
        "or --row are given, every seed completed unless --seeds is)",
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides of every run, key=value")
    return parser


def study_settings(args, rows: list[StudyRow], tables: dict) -> dict:
    """What defines the study's runs: an output folder holds one study (checked on every start)."""
    return {
        "config": args.config_file,
        "overrides": list(args.opts),
        "seeds": list(args.seeds),
        "iters": args.iters,
        "eval_period": math.ceil(args.iters / args.eval_points),
        "max_stages": args.max_stages,
        "score_threshold": args.score_threshold,
        "rows": {r.name: {"config": r.config, "overrides": list(r.overrides), "paper": r.paper} for r in rows},
        "tables": {t: list(names) for t, names in tables.items()},
    }


def _same_config(a: str | None, b: str) -> bool:
    """Two names of one config file (a name from before the Sparse R-CNN configs moved into their project)."""
    try:
        return a is not None and Path(get_config_file(a)).resolve() == Path(get_config_file(b)).resolve()
    except FileNotFoundError:
        return False


def check_same_study(output: Path, settings: dict) -> None:
    """An output folder keeps one study: more rows or seeds may join it, nothing else may change."""
    path = output / SETTINGS_FILE
    if not path.exists():
        return
    old = json.loads(path.read_text())
    for key in ("config", "overrides", "iters", "eval_period", "max_stages", "score_threshold"):
        if old.get(key) != settings[key] and not (key == "config" and _same_config(old.get(key), settings[key])):
            raise StudyError(
                f"{output} holds a study with {key}={old.get(key)!r}, not {settings[key]!r}: its runs would not "
                "compare; choose another --output (or delete that folder to start over)"
            )
    for name, row in settings["rows"].items():
        if name in old["rows"] and old["rows"][name] != row:
            raise StudyError(f"{output} holds a row {name!r} with other settings ({old['rows'][name]}); rename the row")


def run_spec(settings: dict, row: StudyRow, seed: int, run_dir: Path, threads: int) -> dict:
    return {
        "row": row.name,
        "seed": seed,
        "config": row.config or settings["config"],
        "overrides": settings["overrides"],
        "row_overrides": list(row.overrides),
        "iters": settings["iters"],
        "eval_period": settings["eval_period"],
        "max_stages": settings["max_stages"],
        "score_threshold": settings["score_threshold"],
        "run_dir": str(run_dir.resolve()),
        "threads": threads,
    }


def check_rows(settings: dict, rows: list[StudyRow]) -> None:
    """Every row's config and overrides load (before any training, so a typo costs nothing)."""
    for row in rows:
        try:
            load_config(get_config_file(row.config or settings["config"]), [*settings["overrides"], *row.overrides])
        except ConfigOverrideError as e:
            raise StudyError(f"row {row.name!r}: {e}") from None


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def collect(output: Path, rows: list[StudyRow], seeds: list[int]) -> dict[str, list[dict]]:
    results = {}
    for row in rows:
        for seed in seeds:
            path = output / "runs" / row.name / f"seed{seed}" / RESULT_FILE
            if path.exists():
                results.setdefault(row.name, []).append(json.loads(path.read_text()))
    return results


def write_report(output: Path, settings: dict, rows: list[StudyRow], tables: dict) -> list[Path]:
    data = study_tables(rows, tables, collect(output, rows, settings["seeds"]))
    (output / "table.json").write_text(json.dumps(_jsonable({"settings": settings, **data}), indent=1))
    (output / "table.md").write_text(tables_markdown(data, settings) + "\n")
    plots = draw_plots(data, output / "plots", REGO_BASELINES)
    return [output / "table.md", output / "table.json", *plots]


def overrides_last(argv: list[str]) -> list[str]:
    """``argv`` with its ``key=value`` overrides moved to the end, so that list options (``--rows``, ``--seeds``)
    written before them do not take them as values (a ``--row`` value, "NAME: key=value ...", stays)."""
    rest, overrides = [], []
    for i, token in enumerate(argv):
        is_override = "=" in token and not token.startswith("-") and (i == 0 or argv[i - 1] != "--row")
        (overrides if is_override else rest).append(token)
    return rest + overrides


def _saved_row(name: str, saved: dict) -> StudyRow:
    """A row of a study's settings: the paper row of that name when it is the same, else a row of its own."""
    row = PAPER_ROWS.get(name)
    if row is not None and [row.config, list(row.overrides), row.paper] == [
        saved["config"],
        saved["overrides"],
        saved["paper"],
    ]:
        return row
    return StudyRow(name, tuple(saved["overrides"]), saved["config"], saved["paper"])


def report_only(args, output: Path) -> int:
    """``--report``: the tables and plots from the completed runs, with the study's own settings."""
    path = output / SETTINGS_FILE
    if not path.is_file():
        raise StudyError(f"{output} holds no study ({SETTINGS_FILE} is missing): nothing to report")
    saved = json.loads(path.read_text())
    if args.rows is None and not args.row:
        rows, tables = [_saved_row(name, r) for name, r in saved["rows"].items()], saved["tables"]
    else:
        rows, tables = select_rows(args.rows or [], args.row)
    seeds = args.seeds or sorted(
        {
            int(p.name.removeprefix("seed"))
            for r in rows
            for p in (output / "runs" / r.name).glob("seed*")
            if (p / RESULT_FILE).exists()
        }
    )
    settings = {
        **saved,
        "seeds": seeds,
        "rows": {r.name: {"config": r.config, "overrides": list(r.overrides), "paper": r.paper} for r in rows},
        "tables": {t: list(names) for t, names in tables.items()},
    }
    for written in write_report(output, settings, rows, tables):
        print(f"wrote {written}")
    return 0


def main(argv=None) -> int:
    parser = argument_parser()
    args = parser.parse_args(overrides_last(list(sys.argv[1:] if argv is None else argv)))
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        parser.error(f"--output {output} is an existing file, not a folder")
    if args.seeds is not None and len(set(args.seeds)) != len(args.seeds):
        parser.error(f"--seeds {args.seeds} repeats a seed")
    if args.report:
        try:
            return report_only(args, output)
        except StudyRowError as e:
            parser.error(str(e))
    args.rows = list(DEFAULT_GROUPS) if args.rows is None else args.rows
    args.seeds = [0, 1, 2] if args.seeds is None else args.seeds
    try:
        rows, tables = select_rows(args.rows, args.row)
    except UserError as e:
        parser.error(str(e))
    settings = study_settings(args, rows, tables)
    check_same_study(output, settings)
    check_rows(settings, rows)
    # One study per folder at a time: a second one (e.g. started again to resume while the first still runs)
    # would train the same runs into the same folders.
    with output_folder(str(output), "the study"), _workers_end_with_the_study() as workers:
        return _run_study(args, output, settings, rows, tables, workers)


class _Workers:
    """The training processes of a study: stopped with it (SIGTERM, SIGINT or an error), none left orphaned."""

    def __init__(self):
        self.running: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.stopping = False

    def run(self, command: list[str], **kwargs) -> int:
        with self.lock:
            if self.stopping:  # queued runs do not start once the study stops
                return -signal.SIGTERM
            process = subprocess.Popen(command, **kwargs)
            self.running.add(process)
        try:
            return process.wait()
        finally:
            with self.lock:
                self.running.discard(process)

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            for process in self.running:
                process.terminate()  # a run resumes from its last checkpoint when the study is started again
            for process in self.running:
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()


@contextmanager
def _workers_end_with_the_study():
    workers = _Workers()

    def terminated(signum, frame):
        raise KeyboardInterrupt  # unwinds as Ctrl-C does: the workers are stopped below

    previous = (
        signal.signal(signal.SIGTERM, terminated) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        yield workers
    finally:
        workers.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def worker_threads(jobs: int) -> int:
    """Threads of each run: the user's OMP_NUM_THREADS when set, else the cores shared by the runs at once."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, (os.cpu_count() or 1) // jobs)


def _run_study(args, output: Path, settings: dict, rows: list[StudyRow], tables: dict, workers: _Workers) -> int:
    (output / SETTINGS_FILE).write_text(json.dumps(settings, indent=1))

    threads = worker_threads(args.jobs)
    runs = [(row, seed) for row in rows for seed in args.seeds]
    todo = [(r, s) for r, s in runs if not (output / "runs" / r.name / f"seed{s}" / RESULT_FILE).exists()]
    print(
        f"study: {len(rows)} rows x {len(args.seeds)} seeds = {len(runs)} runs of {args.iters} iterations; "
        f"{len(runs) - len(todo)} complete, {len(todo)} to run ({args.jobs} at a time, {threads} threads each)",
        flush=True,
    )
    start = time.perf_counter()
    failed = []
    done = 0

    def one(row_seed):
        row, seed = row_seed
        run_dir = output / "runs" / row.name / f"seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        spec = run_dir / SPEC_FILE
        spec.write_text(json.dumps(run_spec(settings, row, seed, run_dir, threads), indent=1))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        began = time.perf_counter()
        with open(run_dir / "stdout.txt", "a") as log:
            status = workers.run(
                [sys.executable, "-m", "recursivedet.study.run", str(spec)], stdout=log, stderr=log, env=env
            )
        return row, seed, run_dir, status, time.perf_counter() - began

    with ThreadPoolExecutor(args.jobs) as pool:
        try:
            for row, seed, run_dir, status, seconds in pool.map(one, todo):
                done += 1
                elapsed = time.perf_counter() - start
                if status == 0:
                    result = json.loads((run_dir / RESULT_FILE).read_text())
                    what = f"AP {result['metrics'].get('AP', float('nan')):.1f}"
                else:
                    failed.append(run_dir / "stdout.txt")
                    what = f"FAILED (exit {status}; see {run_dir / 'stdout.txt'})"
                remaining = elapsed / done * (len(todo) - done)
                print(
                    f"[{done}/{len(todo)}] {row.name} seed {seed}: {what} in {seconds / 60:.1f} min; "
                    f"study {elapsed / 60:.1f} min, about {remaining / 60:.0f} min to go",
                    flush=True,
                )
                write_report(output, settings, rows, tables)
        except BaseException:  # Ctrl-C or SIGTERM: stop the runs before the pool waits for them
            workers.stop()
            raise
    paths = write_report(output, settings, rows, tables)
    print(f"study: {len(todo) - len(failed)} runs in {(time.perf_counter() - start) / 60:.1f} min")
    for path in paths:
        print(f"wrote {path}")
    if failed:
        print(f"error: {len(failed)} runs failed: " + ", ".join(str(f) for f in failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_command(main)
