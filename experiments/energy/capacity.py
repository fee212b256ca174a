"""The capacity and basin-of-attraction study of Hopfield networks and dense memories.

`capacity_point` stores P random unbiased patterns of N units in one memory and recalls
(a) from each stored pattern itself and (b) from copies with a fraction of bits flipped;
`capacity_curve` runs it over a grid of P/N and seeds. What the curve shows: below the
Amit-Gutfreund-Sompolinsky load alpha_c = 0.138 the Hebbian network keeps a retrieval state
with overlap m ~ 0.97-1 next to each pattern; above it that state disappears and m falls
(smoothly at finite N, sharper as N grows). Storkey's rule moves the edge right; the dense
memory has none within P <= 2N.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import jax
import numpy as np

from experiments.models import hopfield as H
from experiments.models import dense_memory as D

ALPHA_C = 0.138  # Amit, Gutfreund & Sompolinsky 1985


@dataclass(frozen=True)
class Memory:
    """A way to store patterns and recall probes: (patterns) -> recall(probes, key)."""

    name: str
    make: Callable[[np.ndarray], Callable]


def hopfield_memory(rule: str = "hebbian", mode: str = "async", max_sweeps: int = 30) -> Memory:
    def make(pats):
        params = H.store_with(rule, pats)
        return lambda probes, key: H.recall(params, probes, key, mode, max_sweeps)

    return Memory(rule, make)


def dense_memory(beta: float = 1.0, max_steps: int = 20) -> Memory:
    def make(pats):
        params = D.store_dense(pats)
        return lambda probes, key: D.dense_recall(params, probes, beta, max_steps)

    return Memory(f"dense (beta={beta:g})", make)


def random_patterns(p: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((p, n), dtype=np.float32) < 0.5).astype(np.float32)


def capacity_point(memory: Memory, n: int, p: int, seed: int, flips: Sequence[float], probes: int = 200
                   ) -> dict[str, dict[str, float]]:
    """Recall measures at one (N, P, seed): {"<flip>": recall_summary + converged}, flip 0.0 =
    from the stored patterns themselves. About `probes` probes per flip (at least one per pattern)."""
    pats = random_patterns(p, n, seed)
    recall = memory.make(pats)
    trials = max(1, math.ceil(probes / p))
    key = jax.random.key(seed)
    report = H.flip_report(recall, pats, key, tuple(flips), trials)
    out: dict[str, dict[str, float]] = {}
    for name, value in report.items():
        flip, measure = name[len("flip."):].rsplit(".", 1)  # "flip.<fraction>.<measure>"
        out.setdefault(flip, {})[measure] = value
    return out


def capacity_curve(memory: Memory, n: int, alphas: Sequence[float], seeds: Sequence[int],
                   flips: Sequence[float] = (0.0, 0.1), probes: int = 200) -> list[dict]:
    """One record per P/N: P, the measures of each flip averaged over seeds (and their spread)."""
    rows = []
    for alpha in alphas:
        p = max(1, int(round(alpha * n)))
        per_seed = [capacity_point(memory, n, p, s, flips, probes) for s in seeds]
        row = {"memory": memory.name, "N": n, "P": p, "alpha": p / n, "seeds": len(seeds)}
        for flip in per_seed[0]:
            for measure in per_seed[0][flip]:
                vals = [r[flip][measure] for r in per_seed]
                row[f"{flip}.{measure}"] = float(np.mean(vals))
                if measure in ("overlap", "exact_recall"):
                    row[f"{flip}.{measure}_min"] = float(np.min(vals))
        rows.append(row)
    return rows


def basin_curve(memory: Memory, n: int, p: int, flips: Sequence[float], seeds: Sequence[int], probes: int = 200
                ) -> list[dict]:
    """Recall rate against the fraction of flipped bits at one load P/N."""
    per_seed = [capacity_point(memory, n, p, s, flips, probes) for s in seeds]
    rows = []
    for flip in per_seed[0]:
        rows.append({"memory": memory.name, "N": n, "P": p, "alpha": p / n, "flip": float(flip),
                     "exact_recall": float(np.mean([r[flip]["exact_recall"] for r in per_seed])),
                     "overlap": float(np.mean([r[flip]["overlap"] for r in per_seed]))})
    return rows
