"""Hopfield recall rates over many probes and seeds, measured by `nnrun train` itself.

For each seed and update mode, one `nnrun train conf=hopfield_letters` run with
`trainer.trials=N` corrupted copies per stored letter and condition (the bottom half of
the image replaced by random bits, and each flipped-bit noise level); the rates are the
run's own summary.json metrics (exact recall = the probe ends on the stored pattern,
every bit). Writes benchmarks/results/hopfield_recall-<timestamp>.json and prints, per
letter and mode, the rate of each seed and of all seeds pooled.

    python benchmarks/hopfield_recall.py                      # 500 probes x 4 seeds x async, sync
    python benchmarks/hopfield_recall.py --trials 100 --seeds 0 1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(seed: int, mode: str, trials: int, out: Path) -> dict:
    run_dir = out / f"seed{seed}-{mode}"
    cmd = [sys.executable, "-m", "cli.main", "train", "conf=hopfield_letters", f"seed={seed}",
           f"model.update={mode}", f"trainer.trials={trials}", "trainer.plots=false", "trainer.progress=false",
           f"hydra.run.dir={run_dir}"]
    p = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "NNRUN_OUTPUTS": str(out)})
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
    summary = json.loads((run_dir / "summary.json").read_text())
    return {"seed": seed, "mode": mode, "trials": trials, "wall_time_s": summary.get("wall_time_s"),
            "test": summary["test"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=500, help="corrupted probes per letter and condition")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    p.add_argument("--modes", nargs="+", default=["async", "sync"])
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnrun-hopfield-") as tmp:
        runs = [run(s, m, args.trials, Path(tmp)) for m in args.modes for s in args.seeds]
    letters = sorted({k.split(".")[1] for r in runs for k in r["test"] if k.startswith("half.") and
                      k.endswith(".exact_recall") and k.count(".") == 2})
    table: dict = {}
    for mode in args.modes:
        mine = [r for r in runs if r["mode"] == mode]
        rows = {}
        for name in [*letters, "all"]:
            key = "half.exact_recall" if name == "all" else f"half.{name}.exact_recall"
            rates = [r["test"][key] for r in mine]
            rows[name] = {"per_seed": rates, "min": min(rates), "max": max(rates), "pooled": sum(rates) / len(rates)}
        for key in sorted(k for k in mine[0]["test"] if k.startswith("noise.") and k.endswith(".exact_recall")):
            rates = [r["test"][key] for r in mine]
            rows[key] = {"per_seed": rates, "min": min(rates), "max": max(rates), "pooled": sum(rates) / len(rates)}
        table[mode] = rows
        print(f"{mode}: exact recall from half-noise copies, {args.trials} probes per letter and seed "
              f"(seeds {' '.join(map(str, args.seeds))})")
        for name, row in rows.items():
            print(f"  {name:>24}: pooled {row['pooled']:.4f}  min {row['min']:.4f}  max {row['max']:.4f}  "
                  f"per seed {' '.join(f'{x:.3f}' for x in row['per_seed'])}")
    result = {"date": datetime.now().isoformat(timespec="seconds"), "command": " ".join(["python", *sys.argv]),
              "trials": args.trials, "seeds": args.seeds, "modes": args.modes, "letters": letters,
              "rates": table, "runs": runs}
    path = REPO / "benchmarks" / "results" / f"hopfield_recall-{datetime.now():%Y%m%d-%H%M%S}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
