"""The study's plots (PNG), drawn from :func:`~recursivedet.study.report.study_tables` data:

- ``convergence.png``: AP against training iterations, one panel per table (paper Fig. 3);
- ``depth.png``: AP against the number of decoder stages run at inference (paper Fig. 4);
- ``rego.png``: AP with and without REGO at inference beside the model without REGO (REGO Appendix Table 4);
- ``iou.png``: histogram of the IoU of correct detections per stage (REGO Fig. 4).

Mean over seeds, with the standard deviation as a band or error bar.
"""

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed
import matplotlib.pyplot as plt  # noqa: E402

from .stage_evaluation import IOU_BINS  # noqa: E402

__all__ = ["draw_plots"]


def _band(ax, xs, values, label):
    means = [v[0] for v in values]
    spreads = [0.0 if math.isnan(v[1]) else v[1] for v in values]
    (line,) = ax.plot(xs, means, marker="o", markersize=3, label=label)
    ax.fill_between(
        xs,
        [m - s for m, s in zip(means, spreads, strict=True)],
        [m + s for m, s in zip(means, spreads, strict=True)],
        color=line.get_color(),
        alpha=0.15,
    )


def _convergence(data: dict, path: Path) -> None:
    tables = {t: [s["row"] for s in rows] for t, rows in data["tables"].items()}
    fig, axes = plt.subplots(1, len(tables), figsize=(4.2 * len(tables), 3.6), squeeze=False)
    for ax, (table, names) in zip(axes[0], tables.items(), strict=True):
        for name in names:
            curve = data["curves"].get(name)
            if curve:
                _band(ax, [int(it) for it in curve], list(curve.values()), name)
        ax.set(title=table, xlabel="training iterations", ylabel="AP")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _depth(data: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, d in data["depth"].items():
        counts = [int(c) for c in d["AP"]]
        _band(ax, counts, list(d["AP"].values()), f"{name} (trained {d['trained_stages']})")
    ax.set(title="AP against stages run at inference", xlabel="decoder stages at inference", ylabel="AP")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _rego(data: dict, baselines: dict, path: Path) -> None:
    labels, values = [], []
    for name, rego in data["rego"].items():
        if baselines.get(name) in data["final_ap"]:
            labels.append(f"{baselines[name]}\n(no REGO)")
            values.append(data["final_ap"][baselines[name]])
        labels += [f"{name}\nwith REGO", f"{name}\nwithout REGO\nat inference"]
        values += [rego["with_rego"], rego["without_rego"]]
    fig, ax = plt.subplots(figsize=(1.9 * len(labels) + 1, 4))
    ax.bar(range(len(labels)), [v[0] for v in values], yerr=[v[1] for v in values], capsize=4, color="tab:blue")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set(title="REGO at inference", ylabel="AP")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _iou(data: dict, path: Path) -> None:
    fig, axes = plt.subplots(1, len(data["rego"]), figsize=(6.5 * len(data["rego"]), 4), squeeze=False)
    bins = [f"{lo:.1f}-{hi:.1f}" for lo, hi in zip(IOU_BINS[:-1], IOU_BINS[1:], strict=True)]
    for ax, (name, rego) in zip(axes[0], data["rego"].items(), strict=True):
        stages = rego["stages"]
        width = 0.8 / len(stages)
        for i, (label, stage) in enumerate(stages.items()):
            xs = [b + (i - (len(stages) - 1) / 2) * width for b in range(len(bins))]
            ax.bar(xs, stage["iou_histogram"], width, label=f"{label} (mean IoU {stage['mean_iou'][0]:.3f})")
        ax.set_xticks(range(len(bins)), bins)
        ax.set(title=f"correct detections by IoU: {name}", xlabel="IoU with the ground truth", ylabel="detections")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_plots(data: dict, folder: Path, rego_baselines: dict[str, str] | None = None) -> list[Path]:
    """Write the plots that the data has material for into ``folder``; returns their paths.

    Args:
        rego_baselines: REGO row -> the row without REGO to show beside it (its AP in ``data["final_ap"]``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if any(data["curves"].values()):
        _convergence(data, folder / "convergence.png")
        written.append(folder / "convergence.png")
    if data["depth"]:
        _depth(data, folder / "depth.png")
        written.append(folder / "depth.png")
    if data["rego"]:
        _rego(data, rego_baselines or {}, folder / "rego.png")
        _iou(data, folder / "iou.png")
        written += [folder / "rego.png", folder / "iou.png"]
    return written
