"""The study's tables from the runs' ``result.json`` files: mean and spread (sample standard deviation) over the
seeds of each row, as markdown (``table.md``) and JSON (``table.json``)."""

import math
import statistics

from .rows import TABLE_PAPER_AP, StudyRow

__all__ = ["mean_spread", "study_tables", "tables_markdown"]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def mean_spread(values: list[float]) -> tuple[float, float]:
    """(mean, sample standard deviation; 0 for one value) of the finite values; (nan, nan) when none is."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


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
    out = {"tables": {}, "depth": {}, "rego": {}, "curves": {}, "final_ap": {}}
    for table, names in tables.items():
        paper = TABLE_PAPER_AP.get(table, {})
        out["tables"][table] = [
            _row_summary(by_name[n], results.get(n, []), paper.get(n, by_name[n].paper_ap)) for n in names
        ]
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
