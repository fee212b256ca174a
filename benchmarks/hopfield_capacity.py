"""Hopfield capacity, basins of attraction, the dense memory and the restored 'T': the
figures and numbers of the energy-network lecture in one command.

    python benchmarks/hopfield_capacity.py                    # full study (~30-40 min on the shared 2-core CPU)
    python benchmarks/hopfield_capacity.py --sizes 100 --alphas 0.05 0.1 0.15 --quick
    python benchmarks/hopfield_capacity.py --criteria         # the issue's N=100 numbers only (~2 min)

Writes into --out (default outputs/hopfield_capacity/<timestamp>/):
  capacity.png  mean overlap after recall from each stored pattern, and exact recall from
                10% flipped bits, against P/N for each N (Hebbian), Storkey and the dense
                memory at the smallest N; the 0.138 line (Amit, Gutfreund & Sompolinsky 1985)
  dense.png     the same measures up to P = 2N: dense memory against Hebbian
  basin.png     exact recall against the fraction of flipped bits at several loads
  restore.png / restore.gif   the 'T' restored update by update from a half-noise copy
and the numbers to benchmarks/results/hopfield_capacity-<timestamp>.json.
Patterns are random unbiased {0,1}; async updates in random order (max 30 sweeps).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from experiments.energy.capacity import (ALPHA_C, basin_curve, capacity_curve, dense_memory,  # noqa: E402
                                         hopfield_memory)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_capacity(rows: list[dict], path: Path, title: str, xmax: float | None = None) -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, ax, label in (("0.0.overlap", axes[0], "mean overlap m after recall from the stored pattern"),
                           ("0.1.exact_recall", axes[1], "exact recall from 10% flipped bits")):
        for (memory, n), group in _groups(rows).items():
            style = "-" if memory == "hebbian" else ("--" if memory == "storkey" else ":")
            ax.plot([r["alpha"] for r in group], [r[key] for r in group], style, marker="o", markersize=3,
                    label=f"{memory}, N={n}")
        ax.axvline(ALPHA_C, color="k", lw=1, alpha=0.6)
        ax.text(ALPHA_C, 0.02, " 0.138", fontsize=9)
        ax.set_xlabel("load P/N")
        ax.set_ylabel(label)
        ax.set_ylim(-0.02, 1.02)
        if xmax:
            ax.set_xlim(0, xmax)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _groups(rows: list[dict]) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault((r["memory"], r["N"]), []).append(r)
    return out


def plot_basin(rows: list[dict], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["memory"], r["N"], r["P"]), []).append(r)
    for (memory, n, p), group in groups.items():
        ax.plot([r["flip"] for r in group], [r["exact_recall"] for r in group], marker="o", markersize=3,
                label=f"{memory}, N={n}, P/N={p / n:.3g}")
    ax.set_xlabel("fraction of flipped bits in the probe")
    ax.set_ylabel("exact recall rate")
    ax.set_title("basins of attraction")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def restore_t(out: Path) -> dict:
    import jax

    from experiments.data.patterns import PatternsConfig, load_letters
    from experiments.energy.pictures import save_restoration
    from experiments.models import hopfield as H

    ds = load_letters(PatternsConfig())
    shape = ds.meta["image_shape"]
    params = H.store(ds.train.x)
    probe = H.corrupt_half(ds.train.x[0], jax.random.key(1), shape)
    states, energies = H.energy_trace(params, probe, jax.random.key(2))
    save_restoration(states, energies, shape, out, title="the 'T' restored update by update (Hebbian, T L X H)")
    return {"updates": int(len(states) - 1), "restored": bool((states[-1] == ds.train.x[0]).all()),
            "energy_start": float(energies[0]), "energy_end": float(energies[-1])}


def criteria(seeds: int = 5, trials: int = 10) -> dict:
    """The done-means numbers at N = 100: P = 5, 10, 15, 25 random patterns, Hebbian and
    Storkey, `seeds` pattern sets, `trials` probes per pattern with exactly 10% of bits flipped."""
    from experiments.energy.capacity import capacity_point

    out = {}
    for memory in (hopfield_memory("hebbian", max_sweeps=100), hopfield_memory("storkey", max_sweeps=100)):
        for p in (5, 10, 15, 25):
            runs = [capacity_point(memory, 100, p, s, (0.0, 0.1), probes=trials * p) for s in range(seeds)]
            from experiments.models import hopfield as H

            fixed = [H.fixed_point_rate(H.store_with(memory.name, pats), pats)
                     for pats in (random_patterns_(p, 100, s) for s in range(seeds))]
            row = {"fixed_points": float(np.mean(fixed)), "fixed_points_per_seed": fixed,
                   "overlap_10pct": float(np.mean([r["0.1"]["overlap"] for r in runs])),
                   "overlap_10pct_per_seed": [r["0.1"]["overlap"] for r in runs],
                   "exact_10pct": float(np.mean([r["0.1"]["exact_recall"] for r in runs])),
                   "mixture_10pct": float(np.mean([r["0.1"]["mixture"] for r in runs])),
                   "spurious_10pct": float(np.mean([r["0.1"]["spurious"] for r in runs]))}
            out[f"{memory.name}.P={p}"] = row
            print(f"{memory.name:>8} N=100 P={p:3d}: fixed points {row['fixed_points']:.3f}, overlap from 10% flips "
                  f"{row['overlap_10pct']:.3f} (seeds {min(row['overlap_10pct_per_seed']):.3f}-"
                  f"{max(row['overlap_10pct_per_seed']):.3f}), exact {row['exact_10pct']:.3f}, "
                  f"mixture {row['mixture_10pct']:.3f}, spurious {row['spurious_10pct']:.3f}", flush=True)
    return out


def random_patterns_(p: int, n: int, seed: int) -> np.ndarray:
    from experiments.energy.capacity import random_patterns

    return random_patterns(p, n, seed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 200, 500, 1000])
    ap.add_argument("--alphas", type=float, nargs="+", default=[round(0.02 * i, 2) for i in range(1, 16)])
    ap.add_argument("--dense-alphas", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0, 1.5, 2.0])
    ap.add_argument("--seeds", type=int, default=3, help="pattern sets per point at N <= 200 (one above)")
    ap.add_argument("--probes", type=int, default=200, help="probes per point and condition (at least P)")
    ap.add_argument("--beta", type=float, default=1.0, help="dense memory inverse temperature")
    ap.add_argument("--quick", action="store_true", help="one seed, 60 probes")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--criteria", action="store_true", help="only the N=100 done-means numbers (5 seeds)")
    args = ap.parse_args()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    if args.criteria:
        path = REPO / "benchmarks" / "results" / f"hopfield_criteria-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(criteria(), indent=2) + "\n")
        print(f"numbers in {path}")
        return
    out = args.out or REPO / "outputs" / "hopfield_capacity" / stamp
    out.mkdir(parents=True, exist_ok=True)
    seeds_small = 1 if args.quick else args.seeds
    probes = 60 if args.quick else args.probes
    t0 = time.perf_counter()
    result: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    result["restore_T"] = restore_t(out)
    print("T restored:", result["restore_T"], flush=True)

    n0 = min(args.sizes)
    path = REPO / "benchmarks" / "results" / f"hopfield_capacity-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every curve: a long study that is stopped keeps what it measured
        result["wall_time_s"] = time.perf_counter() - t0
        path.write_text(json.dumps(result, indent=2) + "\n")
        if result.get("capacity"):
            plot_capacity(result["capacity"], out / "capacity.png", "Hopfield capacity: random patterns, async recall")
        if result.get("dense"):
            plot_capacity(result["dense"], out / "dense.png", f"dense associative memory vs Hebbian, N={n0}, up to P=2N")
        if result.get("basin"):
            plot_basin(result["basin"], out / "basin.png")

    result["dense"], result["basin"], result["capacity"] = [], [], []
    for memory in (dense_memory(args.beta), hopfield_memory("hebbian")):
        result["dense"] += capacity_curve(memory, n0, args.dense_alphas, range(seeds_small), probes=probes)
    for r in result["dense"]:
        print(f"{r['memory']:>16} N={r['N']} P={r['P']}: fixed-point overlap {r['0.0.overlap']:.3f}, "
              f"exact from 10% flips {r['0.1.exact_recall']:.3f}", flush=True)
    save()

    flips = [round(0.05 * i, 2) for i in range(11)]
    for memory, p in ((hopfield_memory("hebbian"), round(0.05 * n0)), (hopfield_memory("hebbian"), round(0.10 * n0)),
                      (hopfield_memory("hebbian"), round(ALPHA_C * n0)), (hopfield_memory("storkey"), round(0.10 * n0)),
                      (dense_memory(args.beta), n0)):
        result["basin"] += basin_curve(memory, n0, max(1, p), flips, range(seeds_small), probes)
    save()

    runs = [(hopfield_memory("hebbian"), n0), (hopfield_memory("storkey"), n0), (dense_memory(args.beta), n0)]
    runs += [(hopfield_memory("hebbian"), n) for n in sorted(args.sizes) if n != n0]
    for memory, n in runs:
        seeds = range(seeds_small if n <= 200 else 1)
        t = time.perf_counter()
        curve = capacity_curve(memory, n, args.alphas, seeds, probes=probes)
        result["capacity"] += curve
        print(f"{memory.name:>16} N={n:5d}: " + " ".join(f"{r['alpha']:.2f}:{r['0.0.overlap']:.3f}" for r in curve)
              + f"  ({time.perf_counter() - t:.0f} s)", flush=True)
        save()
    print(f"figures in {out}\nnumbers in {path}  ({result['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
