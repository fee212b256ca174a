"""LeNet5 training throughput on this machine's default backend for each activation layout
(NHWC: the backend's own convolution; CHWN: batch-minor patch matmuls) and each way of
driving the steps (one jitted call per step, or a lax.scan chunk of steps).

These numbers chose nnrun's defaults (`model.layout=CHWN`, `trainer.scan=true`). Writes
benchmarks/results/lenet5_layouts-<backend>-<timestamp>.json.

    python benchmarks/lenet5_layouts.py              # about 2 min on 2 CPU cores
    python benchmarks/lenet5_layouts.py --batch 512  # other batch sizes
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).parent))
from lenet5_speed import NnrunTrainer  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=200, help="steps per timed window (a multiple of --chunk)")
    p.add_argument("--chunk", type=int, default=100, help="steps per scanned chunk (nnrun's log_every)")
    p.add_argument("--windows", type=int, default=3, help="timed windows per arm (best is kept)")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = p.parse_args()

    backend = jax.default_backend()
    device = str(jax.devices()[0].device_kind)
    print(f"jax {jax.__version__} on {backend} ({device}), {os.cpu_count()} cpus", flush=True)
    arms = {}
    for layout in ("NHWC", "CHWN"):
        for scan in (False, True):
            name = f"{layout}_{'scan' if scan else 'step'}"
            trainer = NnrunTrainer([f"model.layout={layout}"], scan=scan, chunk=args.chunk, batch=args.batch)
            compile_s = trainer.warm_up()
            arms[name] = (trainer, compile_s)
            print(f"  {name}: compiled in {compile_s:.1f} s", flush=True)
    best = {name: 0.0 for name in arms}
    for _ in range(args.windows):  # interleaved, so that machine noise hits every arm
        for name, (trainer, _) in arms.items():
            best[name] = max(best[name], trainer.images_per_s(args.steps))
    for name, v in best.items():
        print(f"  {name:10s} {v:10,.0f} img/s", flush=True)
    result = {
        "date": datetime.now().isoformat(timespec="seconds"), "jax": jax.__version__, "backend": backend,
        "device": device, "batch": args.batch, "chunk": args.chunk,
        "images_per_s": {k: round(v) for k, v in best.items()},
        "compile_s": {k: round(c, 2) for k, (_, c) in arms.items()},
        "fastest": max(best, key=best.get),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"lenet5_layouts-{backend}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"fastest: {result['fastest']}\nwrote {out}")


if __name__ == "__main__":
    main()
