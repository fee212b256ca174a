"""Sweep throughput: trials per hour with `--vectorize` (one process, the trials vmapped
into one program) against one `nnrun train` process per trial, run one after another
as `nnrun sweep --jobs 1` would.

The grid: 4 learning rates x 4 seeds, `--epochs` epochs each, full MNIST, for the MLP
(conf=mlp_mnist) and LeNet5 (conf=lenet5); each experiment's own recipe otherwise
(plots and checkpoints included: a sweep's trials write them too). Both arms start
fresh Python processes with no persistent XLA compilation cache, as a user's would,
and the arms alternate (`--repeat`) so that load from other work on a shared machine
hits both. Each trial's test accuracy is compared across the arms as a sanity check.

Per-process time does not depend on how many trials run, so `--process-trials M`
measures that arm on the first M trials only (labelled in the output). Where the full
runs take too long (LeNet5 vmapped on a 2-core CPU), `--max-steps S
--extrapolate-epochs 2` stops every trial after S steps and extrapolates both arms to 2
epochs by adding the remaining steps at the median images/s their runs logged
(labelled "extrapolated"). Writes benchmarks/results/sweep_vectorize-<timestamp>.json.

    python benchmarks/sweep_vectorize.py --model mlp --process-trials 8 --repeat 2      # ~7 min on 2 cores
    python benchmarks/sweep_vectorize.py --model lenet5 --max-steps 60 --process-trials 4 --extrapolate-epochs 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = {  # conf, learning rates around the recipe's own
    "mlp": ("mlp_mnist", ["0.0003", "0.001", "0.003", "0.01"]),
    "lenet5": ("lenet5", ["0.0005", "0.001", "0.002", "0.004"]),
}
SEEDS = ["0", "1", "2", "3"]


def grid(model: str, n: int, epochs: int, max_steps: int | None = None) -> list[tuple[str, list[str]]]:
    """The first `n` trials of lr x seed (seed varies fastest): (id, overrides)."""
    _, lrs = MODELS[model]
    combos = [(lr, seed) for lr in lrs for seed in SEEDS][:n]
    # several logged chunks even in a short run: the extrapolation reads their images/s
    extra = [f"trainer.max_steps={max_steps}", f"trainer.log_every={max(1, max_steps // 4)}"] if max_steps else []
    return [(f"{i:03d}", [f"optim.lr={lr}", f"seed={seed}", f"trainer.epochs={epochs}", "trainer.progress=false",
                          *extra]) for i, (lr, seed) in enumerate(combos)]


def clean_env(outputs: Path) -> dict[str, str]:
    drop = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "NNRUN_MNIST_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(NNRUN_OUTPUTS=str(outputs), PYTHONUNBUFFERED="1")
    return env


def run_processes(conf: str, trials: list, out: Path) -> float:
    """One `nnrun train` process per trial, one after another; returns the wall time."""
    t0 = time.perf_counter()
    for tid, overrides in trials:
        cmd = [sys.executable, "-m", "cli.main", "train", f"conf={conf}", *overrides, f"hydra.run.dir={out / tid}"]
        p = subprocess.run(cmd, cwd=REPO, env=clean_env(out), capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"trial {tid} failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def run_vectorized(conf: str, trials: list, out: Path) -> float:
    """All trials in one fresh process (this script's --inner mode); returns the wall time."""
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--inner", conf, str(out), json.dumps(trials)]
    p = subprocess.run(cmd, cwd=REPO, env=clean_env(out), capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"vectorised arm failed:\n{p.stderr[-3000:]}")
    return time.perf_counter() - t0


def inner(conf: str, out: str, trials_json: str) -> None:
    """What `nnrun sweep --vectorize --force-vectorize` does with a grid of vmappable trials."""
    from experiments.sweep.spec import Trial
    from experiments.sweep.vectorized import plan_vectorized, run_vectorized_group

    trials = [Trial(tid, overrides, {}) for tid, overrides in json.loads(trials_json)]
    groups, fallback, reason = plan_vectorized(conf, trials, force=True)
    assert len(groups) == 1 and not fallback, (groups, fallback, reason)
    run_vectorized_group(conf, groups[0], Path(out))


def summaries(out: Path, trials: list) -> list[dict]:
    return [json.loads((out / tid / "summary.json").read_text()) for tid, _ in trials]


def remaining_seconds(out: Path, trials: list, epochs: int) -> float:
    """The training time from where the first trial stopped to `epochs` epochs, at the
    median images/s it logged. A vectorised trial logs its own images/s, which is also
    its group's rate, so this is the group's remaining time too."""
    import yaml

    tid = trials[0][0]
    batch = yaml.safe_load((out / tid / "config.yaml").read_text())["trainer"]["batch_size"]
    records = [json.loads(line) for line in (out / tid / "metrics.jsonl").read_text().splitlines()]
    ips = [r["examples_per_s"] for r in records if r.get("split") == "train" and r.get("examples_per_s")]
    summary = summaries(out, trials[:1])[0]
    steps = epochs * summary["steps_per_epoch"] - summary["steps_done"]
    return max(steps, 0) * batch / statistics.median(ips)


def bench(model: str, n: int, process_n: int, epochs: int, max_steps: int | None, repeat: int,
          extrapolate: int | None, base: Path) -> dict:
    conf, _ = MODELS[model]
    trials = grid(model, n, epochs, max_steps)
    p_trials = trials[:process_n]
    arms: dict[str, list[float]] = {"vectorized": [], "processes": []}
    last: dict[str, Path] = {}
    for r in range(repeat):
        order = ["vectorized", "processes"] if r % 2 == 0 else ["processes", "vectorized"]
        for arm in order:
            out = base / f"{model}-{arm}-{r}"
            load = os.getloadavg()[0]
            wall = run_vectorized(conf, trials, out) if arm == "vectorized" else run_processes(conf, p_trials, out)
            arms[arm].append(wall)
            last[arm] = out
            k = n if arm == "vectorized" else process_n
            print(f"  {model} {arm} (rep {r + 1}): {k} trials x {epochs} epochs in {wall:.1f} s "
                  f"= {3600 * k / wall:.0f} trials/h (load {load:.1f})", flush=True)

    result: dict = {"conf": conf, "grid": f"{len(MODELS[model][1])} lr x {len(SEEDS)} seeds", "epochs": epochs,
                    "max_steps": max_steps, "steps_done": summaries(last["vectorized"], trials[:1])[0]["steps_done"],
                    "trials_vectorized": n, "trials_processes": process_n, "repeats": repeat}
    for arm, walls in arms.items():
        k = n if arm == "vectorized" else process_n
        best = min(walls)
        result[arm] = {"wall_s": [round(w, 1) for w in walls], "best_wall_s": round(best, 1),
                       "per_trial_s": round(best / k, 2), "trials_per_hour": round(3600 * k / best, 1)}
    result["ratio_trials_per_hour"] = round(result["vectorized"]["trials_per_hour"]
                                            / result["processes"]["trials_per_hour"], 2)
    if process_n < n:
        result["note"] = f"processes arm measured on the first {process_n} of {n} trials (per-trial cost is constant)"
    sv, sp = summaries(last["vectorized"], p_trials), summaries(last["processes"], p_trials)
    result["max_test_accuracy_diff"] = max(abs(a["test"]["accuracy"] - b["test"]["accuracy"]) for a, b in zip(sv, sp))
    result["test_accuracy"] = [round(s["test"]["accuracy"], 4) for s in summaries(last["vectorized"], trials)]
    if extrapolate:
        v = result["vectorized"]["best_wall_s"] + remaining_seconds(last["vectorized"], trials, extrapolate)
        p = result["processes"]["per_trial_s"] + remaining_seconds(last["processes"], p_trials, extrapolate)
        result[f"extrapolated_to_{extrapolate}_epochs"] = {
            "vectorized_wall_s": round(v, 1), "processes_per_trial_s": round(p, 1),
            "vectorized_trials_per_hour": round(3600 * n / v, 1), "processes_trials_per_hour": round(3600 / p, 1),
            "ratio_trials_per_hour": round((3600 * n / v) / (3600 / p), 2),
            "how": "measured wall time + the remaining training steps at the median images/s each arm logged "
                   "(per-epoch validation and checkpoints of the extra epochs not included)",
        }
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=[*MODELS, "both"], default="both")
    p.add_argument("--trials", type=int, default=16, help="trials in the grid (first N of 4 lr x 4 seeds)")
    p.add_argument("--process-trials", type=int, default=None, help="run only the first M as processes")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--max-steps", type=int, default=None, help="stop every trial after this many steps")
    p.add_argument("--repeat", type=int, default=1, help="alternating repetitions of both arms")
    p.add_argument("--extrapolate-epochs", type=int, default=None)
    p.add_argument("--inner", nargs=3, metavar=("CONF", "OUT", "TRIALS_JSON"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inner:
        inner(*args.inner)
        return

    import jax

    models = list(MODELS) if args.model == "both" else [args.model]
    result: dict = {"date": datetime.now().isoformat(timespec="seconds"), "machine": platform.processor() or
                    platform.machine(), "cpus": os.cpu_count(), "backend": jax.default_backend(),
                    "jax": jax.__version__, "command": " ".join(["python", *sys.argv]),
                    "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="nnrun-sweep-bench-") as tmp:
        for model in models:
            steps = f" (at most {args.max_steps} steps)" if args.max_steps else ""
            print(f"{model}: {args.trials} trials x {args.epochs} epochs{steps}", flush=True)
            result[model] = bench(model, args.trials, args.process_trials or args.trials, args.epochs,
                                  args.max_steps, args.repeat, args.extrapolate_epochs, Path(tmp))
    result["load_after"] = os.getloadavg()
    out = Path(__file__).parent / "results" / f"sweep_vectorize-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
