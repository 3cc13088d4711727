"""The study's tables from the runs' ``result.json`` files: mean and spread (sample standard deviation) over the
seeds of each row, and paired comparisons (the AP difference of two rows seed by seed, its mean and 95% interval),
as markdown (``table.md``) and JSON (``table.json``)."""

import math
import statistics

from scipy import stats

from .rows import COMPARISONS, TABLE_PAPER_AP, Comparison, StudyRow

__all__ = ["mean_spread", "paired_difference", "study_tables", "tables_markdown"]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def mean_spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value) of the finite values; (nan, nan) when none is."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def paired_difference(row: list[dict], baseline: list[dict], metric: str = "AP", level: float = 0.95) -> dict:
    """The difference row - baseline of ``metric`` over the seeds both have: per seed, the mean and the ``level``
    interval of the mean (Student's t over the per-seed differences; none from fewer than 2 seeds)."""
    base = {r["seed"]: r["metrics"].get(metric) for r in baseline}
    per_seed = {
        r["seed"]: r["metrics"][metric] - base[r["seed"]]
        for r in row
        if r["metrics"].get(metric) is not None and base.get(r["seed"]) is not None
    }
    diffs = list(per_seed.values())
    mean = statistics.fmean(diffs) if diffs else math.nan
    low = high = math.nan
    if len(diffs) > 1:
        half = stats.t.ppf(0.5 + level / 2, len(diffs) - 1) * statistics.stdev(diffs) / math.sqrt(len(diffs))
        low, high = mean - half, mean + half
    return {"per_seed": dict(sorted(per_seed.items())), "mean": mean, "interval": (low, high), "level": level}


# Fewer paired seeds give no verdict: the interval of two differences rests on one spread estimate.
MIN_SEEDS_FOR_A_VERDICT = 3


def verdict(difference: dict, paper_delta: float | None) -> str:
    """ "reproduced" / "contradicted" only when the interval excludes 0 (with the paper's sign / against it);
    for an A/A control (paper_delta 0) "equal within noise" when it includes 0; else "not resolved". None of
    them from fewer than MIN_SEEDS_FOR_A_VERDICT paired seeds."""
    low, high = difference["interval"]
    if len(difference["per_seed"]) < MIN_SEEDS_FOR_A_VERDICT:
        return f"too few seeds ({len(difference['per_seed'])})"
    excludes_zero = low > 0 or high < 0
    if paper_delta == 0.0:
        return "differs: not an A/A pair" if excludes_zero else "equal within noise"
    if not excludes_zero:
        return "not resolved"
    if paper_delta is None:
        return "higher" if low > 0 else "lower"
    return "reproduced" if (low > 0) == (paper_delta > 0) else "contradicted"


def _comparison(c: Comparison, results: dict[str, list[dict]]) -> dict:
    difference = paired_difference(results.get(c.row, []), results.get(c.baseline, []))
    return {**c.__dict__, **difference, "verdict": verdict(difference, c.paper_delta)}


def _row_summary(row: StudyRow, results: list[dict], paper_ap) -> dict:
    summary = {
        "row": row.name,
        "paper": row.paper,
        "paper_AP": paper_ap,
        "seeds": [r["seed"] for r in results],
        "params": results[0]["params"] if results else None,
        "train_minutes": mean_spread([r["train_seconds"] / 60 for r in results])[0],
    }
    for metric in METRICS:
        summary[metric] = mean_spread([r["metrics"].get(metric) for r in results])
    return summary


def _depth(results: list[dict]) -> dict:
    """{stages run: (mean AP, spread)} over the seeds, for the decoder stages."""
    by_count = {}
    for r in results:
        for label, m in r["stages"].items():
            if label.startswith("stage "):
                by_count.setdefault(int(label.split()[1]), []).append(m["AP"])
    return {count: mean_spread(aps) for count, aps in sorted(by_count.items())}


def _rego(results: list[dict]) -> dict | None:
    """A REGO row's AP with REGO at inference (its last REGO stage) and without (the decoder's last stage), and
    the IoU of its correct detections per stage (summed histograms, mean IoU over seeds)."""
    if not results or not any(k.startswith("rego ") for k in results[0]["stages"]):
        return None
    trained = results[0]["trained_stages"]
    labels = [f"stage {trained}", *sorted(k for k in results[0]["stages"] if k.startswith("rego "))]
    per_stage = {}
    for label in labels:
        stats = [r["stages"][label] for r in results]
        per_stage[label] = {
            "AP": mean_spread([s["AP"] for s in stats]),
            "mean_iou": mean_spread([s["mean_iou"] for s in stats]),
            "correct": sum(s["correct"] for s in stats),
            "iou_histogram": [sum(h) for h in zip(*(s["iou_histogram"] for s in stats), strict=True)],
        }
    return {"with_rego": per_stage[labels[-1]]["AP"], "without_rego": per_stage[labels[0]]["AP"], "stages": per_stage}


def study_tables(rows: list[StudyRow], tables: dict[str, tuple[str, ...]], results: dict[str, list[dict]]) -> dict:
    """Everything the report shows, as JSON-ready data.

    Args:
        rows: the study's rows; tables: table name -> row names; results: row name -> completed runs' results.
    """
    by_name = {r.name: r for r in rows}
    out = {"tables": {}, "comparisons": {}, "depth": {}, "rego": {}, "curves": {}, "final_ap": {}}
    for table, names in tables.items():
        paper = TABLE_PAPER_AP.get(table, {})
        out["tables"][table] = [
            _row_summary(by_name[n], results.get(n, []), paper.get(n, by_name[n].paper_ap)) for n in names
        ]
        if table in COMPARISONS:
            out["comparisons"][table] = [_comparison(c, results) for c in COMPARISONS[table]]
    for name, runs in results.items():
        if not runs:
            continue
        out["final_ap"][name] = mean_spread([r["metrics"].get("AP") for r in runs])
        if runs[0]["stages"]:
            out["depth"][name] = {"trained_stages": runs[0]["trained_stages"], "AP": _depth(runs)}
        rego = _rego(runs)
        if rego:
            out["rego"][name] = rego
        curves = {}
        for r in runs:
            for it, ap in r["curve"]:
                curves.setdefault(it, []).append(ap)
        out["curves"][name] = {it: mean_spread(aps) for it, aps in sorted(curves.items())}
    return out


def _cell(value: tuple[float, float], digits: int = 1) -> str:
    mean, spread = value
    return "-" if math.isnan(mean) else f"{mean:.{digits}f} ± {spread:.{digits}f}"


def tables_markdown(data: dict, settings: dict) -> str:
    """The report as markdown: one table per group, then depth, REGO at inference and IoU of correct detections."""
    lines = [
        f"Budget: {settings['iters']} iterations per run, seeds {settings['seeds']}, base config "
        f"`{settings['config']}`; mean ± standard deviation over the seeds. Paper AP: COCO val, R50.",
        "",
    ]
    for table, summaries in data["tables"].items():
        lines += [f"### {table}", "", "| row | paper | paper AP | params | " + " | ".join(METRICS) + " | min/run |"]
        lines.append("|" + " --- |" * (len(METRICS) + 5))
        for s in summaries:
            params = f"{s['params'] / 1e6:.2f}M" if s["params"] else "-"
            paper_ap = "-" if s["paper_AP"] is None else f"{s['paper_AP']}"
            minutes = "-" if math.isnan(s["train_minutes"]) else f"{s['train_minutes']:.1f}"
            cells = " | ".join(_cell(s[m]) for m in METRICS)
            lines.append(
                f"| {s['row']} ({len(s['seeds'])}) | {s['paper']} | {paper_ap} | {params} | {cells} | {minutes} |"
            )
        lines.append("")
        lines += _comparisons_markdown(data.get("comparisons", {}).get(table, []))
    if data["depth"]:
        counts = sorted({c for d in data["depth"].values() for c in d["AP"]})
        lines += ["### AP against the number of stages run at inference (paper Fig. 4)", ""]
        lines.append("| row | trained | " + " | ".join(str(c) for c in counts) + " |")
        lines.append("|" + " --- |" * (len(counts) + 2))
        for name, d in data["depth"].items():
            cells = " | ".join(_cell(d["AP"][c]) if c in d["AP"] else "" for c in counts)
            lines.append(f"| {name} | {d['trained_stages']} | {cells} |")
        lines.append("")
    for name, rego in data["rego"].items():
        lines += [
            f"### REGO at inference and per stage: {name} (REGO Appendix Table 4, Fig. 4)",
            "",
            "| output | AP | correct detections | mean IoU | IoU histogram (0.5-0.6, ..., 0.9-1.0) |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, stage in rego["stages"].items():
            hist = ", ".join(str(c) for c in stage["iou_histogram"])
            lines.append(
                f"| {label} | {_cell(stage['AP'])} | {stage['correct']} | {_cell(stage['mean_iou'], 3)} | {hist} |"
            )
        lines.append("")
    return "\n".join(lines)


def _signed(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:+.1f}"


def _comparisons_markdown(comparisons: list[dict]) -> list[str]:
    if not comparisons:
        return []
    lines = [
        "| claim | row - baseline | paper | AP difference per seed | mean | 95% interval | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comparisons:
        per_seed = ", ".join(f"{seed}: {_signed(d)}" for seed, d in c["per_seed"].items()) or "-"
        paper = "-" if c["paper_delta"] is None else _signed(c["paper_delta"])
        low, high = c["interval"]
        interval = "-" if math.isnan(low) else f"[{low:+.1f}, {high:+.1f}]"
        lines.append(
            f"| {c['claim']} | {c['row']} - {c['baseline']} | {paper} | {per_seed} | {_signed(c['mean'])} | "
            f"{interval} | {c['verdict']} |"
        )
    return [*lines, ""]
