"""LeNet5 training speed: nnrun's loop against the same model, batch and optimizer in plain
PyTorch, in the same process and on the same data.

Reports, for each: compile/warm-up time, steady-state training images/s (best of
several timed windows, the two frameworks interleaved so that machine noise hits both),
and time to 99.0% MNIST test accuracy (training time only; test evaluated after each
epoch, outside the clock). Writes benchmarks/results/lenet5_speed-<timestamp>.json.

    pip install -e '.[bench]'        # torch==2.13.0, CPU build
    python benchmarks/lenet5_speed.py                 # everything (about 10 min on 2 cores)
    python benchmarks/lenet5_speed.py --no-accuracy   # throughput only (about 4 min)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime
from pathlib import Path

import jax
import numpy as np

from experiments.hydra_bridge import compose, task_config
from experiments.config import validate
from experiments.training.supervised import (
    Evaluator, build_setup, epoch_order, initial_state, make_chunk, make_train_step, run_chunk,
)
from experiments.runs import StopRequest

BATCH = 128


# ----------------------------------------------------------------------------- nnrun


class NnrunTrainer:
    def __init__(self, overrides: list[str], scan: bool | None = None, chunk: int | None = None,
                 batch: int = BATCH, conf: str = "lenet5"):
        """scan, chunk: None means the experiment's own trainer.scan and log_every."""
        self.batch = batch
        self.exp = validate(task_config(compose(conf, [f"trainer.batch_size={batch}", *overrides])[0]))
        self.setup = build_setup(self.exp)
        data = self.setup.dataset
        self.X, self.Y = jax.device_put(data.train.x), jax.device_put(data.train.y)
        self.n = len(data.train)
        step = make_train_step(self.setup.model, self.setup.tx, batch, jax.random.fold_in(self.setup.key, 2))
        self.step = jax.jit(step, donate_argnums=0)
        self.chunk_len = chunk or self.exp.trainer.log_every
        scan = self.exp.trainer.scan if scan is None else scan
        self.chunk = jax.jit(make_chunk(step, self.chunk_len), donate_argnums=0) if scan else None
        self.state = initial_state(self.setup)
        self.evaluator = Evaluator(self.setup.model, 1000)

    def warm_up(self) -> float:
        """Compile what the loop uses (with scan on, the step too: it runs an epoch's
        remainder); returns the seconds spent."""
        t = time.perf_counter()
        order = epoch_order(self.setup.key, 0, self.n)
        for fn in filter(None, (self.step, self.chunk)):
            self.state = fn(self.state, self.X, self.Y, order, 0)
        jax.block_until_ready(self.state.step)
        return time.perf_counter() - t

    def images_per_s(self, steps: int) -> float:
        order = epoch_order(self.setup.key, 0, self.n)
        t = time.perf_counter()
        if self.chunk is not None:
            steps = max(1, steps // self.chunk_len) * self.chunk_len
            for c in range(steps // self.chunk_len):
                self.state = self.chunk(self.state, self.X, self.Y, order, c * self.chunk_len)
        else:
            for i in range(steps):
                self.state = self.step(self.state, self.X, self.Y, order, i)
        jax.block_until_ready(self.state.step)
        return steps * self.batch / (time.perf_counter() - t)

    def train_epoch(self, epoch: int) -> float:
        """One epoch exactly as `nnrun train` runs it: full chunks scanned (if on), the
        remainder step by step."""
        order = epoch_order(self.setup.key, epoch, self.n)
        t = time.perf_counter()
        i, steps = 0, self.setup.steps_per_epoch
        while i < steps:
            n = min(self.chunk_len, steps - i)
            self.state, n = run_chunk(self.state, (self.X, self.Y, order), i, n, self.step, self.chunk,
                                      self.chunk_len, StopRequest(signals=()))
            i += n
        jax.block_until_ready(self.state.step)
        return time.perf_counter() - t

    def test_accuracy(self) -> float:
        variables = {"params": self.state.params, **self.state.model_state}
        return self.evaluator(variables, self.setup.dataset.test)["accuracy"]


# ----------------------------------------------------------------------------- PyTorch


class TorchTrainer:
    """The same LeNet5 (61,706 params), Adam, batch 128, written the usual PyTorch way."""

    def __init__(self, dataset, lr: float, seed: int = 0):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.torch = torch
        self.model = nn.Sequential(
            nn.ZeroPad2d(2),
            nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Tanh(),
            nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Tanh(),
            nn.Conv2d(16, 120, 5), nn.Tanh(), nn.Flatten(),
            nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10),
        )
        assert sum(p.numel() for p in self.model.parameters()) == 61706
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.loss = nn.CrossEntropyLoss()
        to_nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
        self.X, self.Y = to_nchw(dataset.train.x), torch.from_numpy(dataset.train.y.astype(np.int64))
        self.Xt, self.Yt = to_nchw(dataset.test.x), torch.from_numpy(dataset.test.y.astype(np.int64))
        self.steps_per_epoch = len(self.X) // BATCH
        self.gen = torch.Generator().manual_seed(seed)

    def _steps(self, perm, start: int, n: int) -> None:
        for i in range(start, start + n):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(self.X[idx]), self.Y[idx]).backward()
            self.opt.step()

    def warm_up(self) -> float:
        t = time.perf_counter()
        self._steps(self.torch.randperm(len(self.X), generator=self.gen), 0, 2)
        return time.perf_counter() - t

    def images_per_s(self, steps: int) -> float:
        perm = self.torch.randperm(len(self.X), generator=self.gen)
        t = time.perf_counter()
        self._steps(perm, 0, steps)
        return steps * BATCH / (time.perf_counter() - t)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        perm = self.torch.randperm(len(self.X), generator=self.gen)
        t = time.perf_counter()
        self._steps(perm, 0, self.steps_per_epoch)
        return time.perf_counter() - t

    def test_accuracy(self) -> float:
        self.model.eval()
        with self.torch.no_grad():
            pred = self.model(self.Xt).argmax(1)
        return float((pred == self.Yt).float().mean())


# ----------------------------------------------------------------------------- driver


def time_to_target(trainer, epochs: int, target: float, label: str) -> dict:
    clock, curve, reached = 0.0, [], None
    for epoch in range(epochs):
        clock += trainer.train_epoch(epoch)
        acc = trainer.test_accuracy()
        curve.append({"epoch": epoch + 1, "train_s": round(clock, 2), "test_accuracy": acc})
        print(f"  {label} epoch {epoch + 1}: test acc {acc:.4f} after {clock:.1f} s of training", flush=True)
        if reached is None and acc >= target:
            reached = {"epoch": epoch + 1, "train_s": round(clock, 2)}
    return {"curve": curve, "reached": reached, "final_test_accuracy": curve[-1]["test_accuracy"]}


def measure(framework: str, args: argparse.Namespace) -> dict:
    """One framework's measurements, in this process only (see main)."""
    out: dict = {}
    if framework == "nnrun":
        step, scan = NnrunTrainer([], scan=False), NnrunTrainer([], scan=True)
        out["compile_s"] = {"step": step.warm_up(), "scan_chunk": scan.warm_up()}
        arms = {"nnrun_step": step, "nnrun_scan": scan}
    else:
        probe = NnrunTrainer([])  # the same data arrays and lr as nnrun's recipe
        torch_trainer = TorchTrainer(probe.setup.dataset, lr=probe.exp.optim.lr)
        out["compile_s"] = {"first_steps": torch_trainer.warm_up()}
        arms = {"torch": torch_trainer}
    best = {k: 0.0 for k in arms}
    for _ in range(args.windows):
        for k, trainer in arms.items():
            best[k] = max(best[k], trainer.images_per_s(args.steps))
    out["images_per_s"] = {k: round(v) for k, v in best.items()}
    print(f"  {framework}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in best.items()), flush=True)
    if args.accuracy:
        if framework == "nnrun":
            # the recipe as `nnrun train conf=lenet5` runs it: its chunk length and scan default
            trainer = NnrunTrainer([])
            out["recipe_compile_s"] = trainer.warm_up()  # compile outside the clock ...
            trainer.state = initial_state(trainer.setup)  # ... then the recipe from step 0
            out["recipe"] = {"epochs": trainer.exp.trainer.epochs, "lr": trainer.exp.optim.lr,
                             "schedule": trainer.exp.schedule.name}
            out["time_to_target"] = time_to_target(trainer, trainer.exp.trainer.epochs, args.target, "nnrun")
        else:
            trainer = TorchTrainer(NnrunTrainer([]).setup.dataset, lr=args.torch_lr)
            out["recipe"] = {"epochs": args.torch_epochs, "lr": args.torch_lr, "schedule": "constant"}
            out["time_to_target"] = time_to_target(trainer, args.torch_epochs, args.target, "torch")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="steps per timed throughput window")
    p.add_argument("--windows", type=int, default=3, help="timed windows per arm and round (best is kept)")
    p.add_argument("--rounds", type=int, default=2, help="alternating nnrun/torch rounds of throughput")
    p.add_argument("--no-accuracy", action="store_true", help="skip the time-to-99%% runs")
    p.add_argument("--torch-epochs", type=int, default=10)
    p.add_argument("--torch-lr", type=float, default=1e-3)
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--only", choices=["nnrun", "torch"], help=argparse.SUPPRESS)  # internal: one arm
    p.add_argument("--accuracy", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print("RESULT " + json.dumps(measure(args.only, args)), flush=True)
        return

    # Each framework runs in its own process, one at a time: in one process XLA's and
    # PyTorch's thread pools fight over the two cores and both slow down several-fold.
    import subprocess
    import sys

    import torch

    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()}", flush=True)
    result: dict = {"date": datetime.now().isoformat(timespec="seconds"), "batch": BATCH,
                    "jax": jax.__version__, "torch": torch.__version__, "backend": jax.default_backend(),
                    "load_before": os.getloadavg(), "rounds": []}

    def child(framework: str, accuracy: bool) -> dict:
        cmd = [sys.executable, __file__, "--only", framework, "--steps", str(args.steps),
               "--windows", str(args.windows), "--torch-epochs", str(args.torch_epochs),
               "--torch-lr", str(args.torch_lr), "--target", str(args.target)] + (["--accuracy"] if accuracy else [])
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"the {framework} measurement failed:\n{proc.stderr[-3000:]}")
        print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("RESULT")), flush=True)
        return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[7:])

    for r in range(args.rounds):
        result["rounds"].append({fw: child(fw, False) for fw in ("nnrun", "torch")})
    best = {}
    for rnd in result["rounds"]:
        for fw in rnd.values():
            for k, v in fw["images_per_s"].items():
                best[k] = max(best.get(k, 0), v)
    result["images_per_s"] = best
    result["nnrun_over_torch"] = round(max(best["nnrun_step"], best["nnrun_scan"]) / best["torch"], 3)
    result["compile_s"] = {fw: d["compile_s"] for fw, d in result["rounds"][0].items()}
    if not args.no_accuracy:
        result["time_to_target"] = {fw: child(fw, True) for fw in ("nnrun", "torch")}

    out = Path(__file__).parent / "results" / f"lenet5_speed-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("images_per_s", "nnrun_over_torch", "compile_s")}, indent=2))
    for fw, d in result.get("time_to_target", {}).items():
        print(fw, d["recipe"], "reached", d["time_to_target"]["reached"],
              "final", d["time_to_target"]["final_test_accuracy"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
