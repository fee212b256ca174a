"""Learning curves as PNG, drawn from a run's metrics.jsonl (so every trainer gets them):
one plot per metric the run recorded, train chunks beside validation epochs."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.runs import read_metrics

NOT_CURVES = {"step", "epoch", "split", "time", "lr", "examples_per_s", "partial"}


def curve_names(records: list[dict]) -> list[str]:
    """The metrics recorded for training or validation, in first-seen order."""
    names: dict[str, None] = {}
    for r in records:
        if r.get("split") in ("train", "val", "train_epoch"):
            for k, v in r.items():
                if k not in NOT_CURVES and not k.startswith("train_") and isinstance(v, (int, float)) \
                        and not isinstance(v, bool):
                    names[k] = None
    return list(names)


def plot_learning_curves(run_dir: Path) -> list[Path]:
    """Write plots/<metric>.png for each recorded metric; return the files written."""
    records = read_metrics(run_dir)
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in curve_names(records):
        fig, ax = plt.subplots(figsize=(6, 4))
        for split, style in (("train", "-"), ("val", "o-"), ("train_epoch", "s--")):
            pts = [(r["epoch"], r[metric]) for r in records
                   if r.get("split") == split and isinstance(r.get(metric), (int, float))]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, style, label=split, markersize=3, alpha=0.6 if split == "train" else 1.0)
        if not ax.lines:
            plt.close(fig)
            continue
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        values = [y for line in ax.lines for y in line.get_ydata()]
        log = metric in ("loss", "perplexity") and min(values) > 0
        if log:
            ax.set_yscale("log")
        limits = y_limits([(x, y) for line in ax.lines for x, y in zip(line.get_xdata(), line.get_ydata())], log)
        if limits:
            ax.set_ylim(*limits)
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"{run_title(Path(run_dir))}: {metric}", fontsize=10)
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def run_title(run_dir: Path) -> str:
    """The run's experiment and id (a sweep trial: the sweep's id and the trial's)."""
    from experiments.runs import SUMMARY, read_json

    try:
        experiment = read_json(run_dir / SUMMARY).get("experiment") or ""
    except (OSError, ValueError):
        experiment = ""
    run_id = f"{run_dir.parent.name}/{run_dir.name}" if run_dir.name.isdigit() else run_dir.name
    return f"{experiment} {run_id}".strip()


def y_limits(points: list[tuple[float, float]], log: bool = False, skip: float = 0.1) -> Optional[tuple[float, float]]:
    """A y range that shows where the curves differ: the values after the first `skip` of
    the x range (the first chunks of a run sit far from the rest and would flatten it),
    with a margin; None when that leaves nothing to narrow."""
    import math

    finite = [(x, y) for x, y in points if math.isfinite(x) and math.isfinite(y) and (y > 0 or not log)]
    if len(finite) < 3:
        return None
    x0, x1 = min(x for x, _ in finite), max(x for x, _ in finite)
    later = [y for x, y in finite if x >= x0 + skip * (x1 - x0)] or [y for _, y in finite]
    lo, hi = min(later), max(later)
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.05
    lo, hi = lo - pad, hi + pad
    return (10 ** lo, 10 ** hi) if log else (lo, hi)
