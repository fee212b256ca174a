"""LeNet5 steady-state training throughput of this checkout against an older commit of nnrun,
each in its own process, alternating, on the same machine and settings (the experiment's own:
batch 128, scanned chunks of 100 steps). For "did this change cost speed?" questions.

    python benchmarks/lenet5_ab.py --rev 4c493aa            # about 3 min on 2 CPU cores

The older commit is checked out into a temporary git worktree; both sides use this
checkout's venv and the older side's own benchmarks/lenet5_speed.py.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = """import sys, json; sys.path.insert(0, "benchmarks"); from lenet5_speed import NnrunTrainer
t = NnrunTrainer([]); c = t.warm_up()
print(json.dumps({"compile_s": round(c, 2), "images_per_s": [round(t.images_per_s(%d)) for _ in range(%d)]}))"""


def probe(tree: Path, steps: int, windows: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", PROBE % (steps, windows)], cwd=tree, env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rev", required=True, help="the older commit to compare with")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=600, help="steps per timed window")
    p.add_argument("--windows", type=int, default=4, help="timed windows per process")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="nnrun-ab-") as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(old), args.rev], check=True)
        try:
            rounds = []
            for r in range(args.rounds):
                pair = {"old": probe(old, args.steps, args.windows), "new": probe(REPO, args.steps, args.windows)}
                print(f"round {r + 1}: " + json.dumps(pair), flush=True)
                rounds.append(pair)
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(old)], check=False)
    for side in ("old", "new"):
        medians = [statistics.median(r[side]["images_per_s"]) for r in rounds]
        print(f"{side}: round medians {', '.join(f'{m:,.0f}' for m in medians)} images/s")


if __name__ == "__main__":
    main()
