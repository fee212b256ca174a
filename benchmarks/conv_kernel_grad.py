"""Training speed of the NHWC convolution models with XLA's kernel gradient against the blocked
patch-matmul one (experiments/models/patch_conv.py: conv_nhwc), on whole nnrun training steps.

Each (config, implementation) runs in its own process, through nnrun's own step (the
lenet5_speed harness), with augmentation off; prints training images/s of two timed windows.

    python benchmarks/conv_kernel_grad.py --data-root ../shared/data/cifar-10
    python benchmarks/conv_kernel_grad.py --conf alexnet_cifar10 --steps 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT = [("cnn_mnist", 20), ("alexnet_cifar10", 5), ("googlenet_cifar10", 3)]


def arm(conf: str, impl: str, steps: int, data_root: str | None) -> dict:
    import jax

    sys.path.insert(0, str(Path(__file__).parent))
    import experiments.models.layers as layers
    from lenet5_speed import NnrunTrainer

    if impl == "xla":  # what layers.Conv called before conv_nhwc
        layers.conv_nhwc = jax.lax.conv_general_dilated
    overrides = [f"trainer.log_every={steps}", "data.augment=[]"]
    if data_root and "cifar" in conf:
        overrides.append(f"data.root={data_root}")
    trainer = NnrunTrainer(overrides, conf=conf, batch=128)
    warm = trainer.warm_up()
    return {"conf": conf, "kernel_grad": impl, "warmup_s": round(warm, 1),
            "images_per_s": [round(trainer.images_per_s(steps), 1) for _ in range(2)]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--conf", action="append", help="a config (repeatable); default: cnn_mnist, alexnet, googlenet")
    p.add_argument("--steps", type=int, help="steps per timed window (default: 20, 5, 3 by config)")
    p.add_argument("--data-root", default=os.environ.get("NNRUN_CIFAR10_DIR"), help="a local CIFAR-10 copy")
    p.add_argument("--arm", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.arm:
        print(json.dumps(arm(args.arm[0], args.arm[1], args.steps, args.data_root)))
        return
    confs = [(c, args.steps or 5) for c in args.conf] if args.conf else [(c, args.steps or s) for c, s in DEFAULT]
    for conf, steps in confs:
        for impl in ("xla", "blocked"):
            cmd = [sys.executable, __file__, "--arm", conf, impl, "--steps", str(steps)]
            cmd += ["--data-root", args.data_root] if args.data_root else []
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
            failed = f"{conf} {impl} failed: {out.stderr[-500:]}"
            print(out.stdout.strip().splitlines()[-1] if out.returncode == 0 else failed, flush=True)


if __name__ == "__main__":
    main()
