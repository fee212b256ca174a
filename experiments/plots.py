"""Learning curves as PNG, drawn from a run's metrics.jsonl (so every trainer gets them):
one plot per metric the run recorded, train chunks beside validation epochs."""
from __future__ import annotations

from pathlib import Path

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
        if metric in ("loss", "perplexity") and min(values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_title(f"{Path(run_dir).name}: {metric}")
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
