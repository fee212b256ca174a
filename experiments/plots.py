"""Learning curves as PNG, drawn from a run's metrics.jsonl (so any loop gets them)."""
from __future__ import annotations

from pathlib import Path

from experiments.runs import read_metrics


def plot_learning_curves(run_dir: Path) -> list[Path]:
    """Write plots/loss.png and plots/accuracy.png; return the files written."""
    records = read_metrics(run_dir)
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(run_dir) / "plots"
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in ("loss", "accuracy"):
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
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / f"{metric}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
