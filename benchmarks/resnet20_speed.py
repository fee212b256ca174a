"""ResNet-20 training speed on CIFAR-sized input: nnrun's loop against the same network in
plain PyTorch, in the same run, each framework in its own process (alternating, round after
round, so that machine noise hits both).

Both arms: ResNet-20 of He et al. 2015 (3x3 stem, 3x3 basic blocks with BatchNorm, option-A
shortcuts; 269,722 parameters, checked in both), He fan-out normal initialisation of the
convs, SGD momentum 0.9, lr 0.1, weight decay 1e-4 (coupled L2), batch 128, training mode
(batch statistics, running averages updated), the CIFAR-10 training images (32x32x3,
per-channel standardised) without augmentation in either arm, the same number of threads.
nnrun runs `conf=resnet20_cifar10` through its own step and chunks (driver.make_step,
make_chunk: experiments/training/driver.py), exactly as `nnrun train` does.

Reports each arm's warm-up (compile) time and steady-state training images/s (best window
of each round) and the ratio nnrun / PyTorch. Writes benchmarks/results/resnet20_speed-<timestamp>.json.

    pip install -e '.[bench]'                     # torch==2.13.0, CPU build
    python benchmarks/resnet20_speed.py           # 1 round, 3 windows of 20 steps per arm
    python benchmarks/resnet20_speed.py --rounds 3 --steps 40 --data-root ../shared/data/cifar-10
    python benchmarks/resnet20_speed.py --layout NHWC ...  # XLA's convolutions instead of patch matmuls
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

BATCH = 128
REPO = Path(__file__).resolve().parents[1]
RESNET20_PARAMS = 269_722


# ----------------------------------------------------------------------------- nnrun


def nnrun_arm(args) -> dict:
    sys.path.insert(0, str(Path(__file__).parent))
    from lenet5_speed import NnrunTrainer  # the house harness: nnrun's own step and chunks

    overrides = ["data.augment=[]", f"trainer.log_every={args.steps}", f"model.layout={args.layout}"]
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    trainer = NnrunTrainer(overrides, conf="resnet20_cifar10", batch=BATCH)
    import jax

    params = sum(p.size for p in jax.tree.leaves(trainer.state.inner.params))
    assert params == RESNET20_PARAMS, params
    warm = trainer.warm_up()
    rates = [trainer.images_per_s(args.steps) for _ in range(args.windows)]
    return {"framework": "nnrun (JAX/XLA)", "jax": jax.__version__, "backend": jax.default_backend(),
            "warmup_s": warm, "images_per_s": rates, "params": int(params), "scan": bool(trainer.chunk is not None),
            "layout": args.layout}


# ----------------------------------------------------------------------------- PyTorch


def torch_model():
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.stride, self.extra = stride, cout - cin

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            if self.stride != 1 or self.extra:  # option A: subsample, zero-pad the channels
                x = x[:, :, ::self.stride, ::self.stride]
                x = F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))
            return F.relu(x + y)

    class ResNet20(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            blocks, cin = [], 16
            for s, width in enumerate((16, 32, 64)):
                for b in range(3):
                    blocks.append(Block(cin, width, 2 if s > 0 and b == 0 else 1))
                    cin = width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(64, 10)
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def forward(self, x):
            x = self.blocks(F.relu(self.bn1(self.conv1(x))))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    return ResNet20()


def torch_arm(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = torch_model()
    params = sum(p.numel() for p in model.parameters())
    assert params == RESNET20_PARAMS, params
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    x, y = _cifar_like(args)
    X = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    Y = torch.from_numpy(y.astype(np.int64))
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(0))
    pos = [0]

    def step():
        i = order[pos[0]:pos[0] + BATCH]
        pos[0] = (pos[0] + BATCH) % (len(X) - BATCH)
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X[i]), Y[i])
        loss.backward()
        opt.step()
        return loss

    t = time.perf_counter()
    for _ in range(3):
        step()
    warm = time.perf_counter() - t
    rates = []
    for _ in range(args.windows):
        t = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        float(loss)
        rates.append(args.steps * BATCH / (time.perf_counter() - t))
    return {"framework": "PyTorch (eager)", "torch": torch.__version__, "threads": torch.get_num_threads(),
            "warmup_s": warm, "images_per_s": rates, "params": int(params)}


def _cifar_like(args) -> tuple[np.ndarray, np.ndarray]:
    """The training images nnrun uses (same loader and standardisation), so both arms see the same data."""
    from experiments.config import validate
    from experiments.data import load_dataset
    from experiments.hydra_bridge import compose, task_config

    overrides = [f"data.root={args.data_root}"] if args.data_root else []
    exp = validate(task_config(compose("resnet20_cifar10", overrides)[0]))
    data = load_dataset(exp.data)
    n = min(len(data.train), 20 * BATCH)
    return np.asarray(data.train.x[:n], np.float32), np.asarray(data.train.y[:n])


# ----------------------------------------------------------------------------- driver


def run_arm(arm: str, args) -> dict:
    # XLA's CPU client uses every core; PyTorch gets as many intra-op threads (--threads)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, __file__, "--arm", arm, "--steps", str(args.steps), "--windows", str(args.windows),
           "--threads", str(args.threads), "--layout", args.layout]
    cmd += ["--data-root", args.data_root] if args.data_root else []
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    if out.returncode:
        raise SystemExit(f"{arm} arm failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arm", choices=("nnrun", "torch"), help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--steps", type=int, default=20, help="training steps per timed window")
    p.add_argument("--windows", type=int, default=3, help="timed windows per arm and round")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="PyTorch threads (XLA: all cores)")
    p.add_argument("--data-root", default=os.environ.get("NNRUN_CIFAR10_DIR"),
                   help="a local CIFAR-10 copy (data.root); default: the cache / download")
    p.add_argument("--layout", choices=("auto", "NHWC", "CHWN"), default="auto",
                   help="nnrun's model.layout: the config's default (auto: CHWN on CPU), XLA convolutions "
                        "(NHWC, kernel gradient by blocked patch matmuls on CPU) or batch-minor patch matmuls (CHWN)")
    p.add_argument("--note", default="", help="recorded with the results, e.g. 'CPU shared with 6 other jobs'")
    args = p.parse_args()
    if args.arm:
        print(json.dumps(nnrun_arm(args) if args.arm == "nnrun" else torch_arm(args)))
        return
    rounds = []
    for r in range(args.rounds):
        arms = ("nnrun", "torch") if r % 2 == 0 else ("torch", "nnrun")
        result = {arm: run_arm(arm, args) for arm in arms}
        rounds.append(result)
        print(f"round {r + 1}: " + ", ".join(f"{a} {max(result[a]['images_per_s']):.1f} img/s" for a in arms),
              flush=True)
    best = {arm: max(max(r[arm]["images_per_s"]) for r in rounds) for arm in ("nnrun", "torch")}
    summary = {
        "benchmark": "resnet20_speed", "time": datetime.now().isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
                    "load_average_at_end": os.getloadavg()},
        "note": args.note, "layout": args.layout, "batch": BATCH, "steps_per_window": args.steps,
        "threads": args.threads,
        "best_images_per_s": best, "ratio_nnrun_over_torch": best["nnrun"] / best["torch"], "rounds": rounds,
    }
    out = REPO / "benchmarks" / "results" / f"resnet20_speed-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    print(f"nnrun {best['nnrun']:.1f} img/s, PyTorch {best['torch']:.1f} img/s: "
          f"ratio {summary['ratio_nnrun_over_torch']:.2f}x  ({out})")


if __name__ == "__main__":
    main()
