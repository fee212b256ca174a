"""LeNet5 training speed: nnrun's loop against the same model, batch and optimizer in plain
PyTorch, in the same process and on the same data.

Reports, for each: compile/warm-up time, steady-state training images/s (best of
several timed windows, the two frameworks interleaved so that machine noise hits both),
and time to 99.0% MNIST test accuracy (training time only; test evaluated after each
epoch, outside the clock). Writes benchmarks/results/lenet5_speed-<timestamp>.json.

    pip install -e '.[bench]'        # torch==2.13.0, CPU build
    python benchmarks/lenet5_speed.py                 # everything (about 6-10 min on 2 cores)
    python benchmarks/lenet5_speed.py --no-accuracy   # throughput only (about 1 min)
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from cli.hydra_bridge import compose, task_config
from experiments.config import validate
from experiments.training.supervised import (
    Evaluator, build_setup, epoch_order, initial_state, make_chunk, make_train_step,
)

BATCH = 128


# ----------------------------------------------------------------------------- nnrun


class NnrunTrainer:
    def __init__(self, overrides: list[str], scan: bool = False, chunk: int = 50):
        self.exp = validate(task_config(compose("lenet5", overrides)[0]))
        self.setup = build_setup(self.exp)
        data = self.setup.dataset
        self.X, self.Y = jax.device_put(data.train.x), jax.device_put(data.train.y)
        self.n = len(data.train)
        step = make_train_step(self.setup.model, self.setup.tx, BATCH, jax.random.fold_in(self.setup.key, 2))
        self.step = jax.jit(step, donate_argnums=0)
        self.chunk_len = chunk
        self.chunk = jax.jit(make_chunk(step, chunk), donate_argnums=0) if scan else None
        self.state = initial_state(self.setup)
        self.evaluator = Evaluator(self.setup.model, 1000)

    def warm_up(self) -> float:
        t = time.perf_counter()
        order = epoch_order(self.setup.key, 0, self.n)
        self.state = (self.chunk or self.step)(self.state, self.X, self.Y, order, 0)
        jax.block_until_ready(self.state.step)
        return time.perf_counter() - t

    def images_per_s(self, steps: int) -> float:
        order = epoch_order(self.setup.key, 0, self.n)
        t = time.perf_counter()
        if self.chunk is not None:
            for c in range(steps // self.chunk_len):
                self.state = self.chunk(self.state, self.X, self.Y, order, c * self.chunk_len)
        else:
            for i in range(steps):
                self.state = self.step(self.state, self.X, self.Y, order, i)
        jax.block_until_ready(self.state.step)
        return steps * BATCH / (time.perf_counter() - t)

    def train_epoch(self, epoch: int) -> float:
        order = epoch_order(self.setup.key, epoch, self.n)
        t = time.perf_counter()
        for i in range(self.setup.steps_per_epoch):
            self.state = self.step(self.state, self.X, self.Y, order, i)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="steps per timed throughput window")
    p.add_argument("--windows", type=int, default=4, help="timed windows per framework (best is kept)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the time-to-99%% runs")
    p.add_argument("--torch-epochs", type=int, default=10)
    p.add_argument("--torch-lr", type=float, default=1e-3)
    p.add_argument("--target", type=float, default=0.99)
    args = p.parse_args()

    import torch

    print(f"jax {jax.__version__} on {jax.default_backend()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {platform.processor() or platform.machine()}")
    result: dict = {"date": datetime.now().isoformat(timespec="seconds"), "batch": BATCH,
                    "jax": jax.__version__, "torch": torch.__version__, "backend": jax.default_backend()}

    nn_step, nn_scan = NnrunTrainer([], scan=False), NnrunTrainer([], scan=True)
    tt = TorchTrainer(nn_step.setup.dataset, lr=nn_step.exp.optim.lr)
    result["compile_s"] = {"nnrun_step": nn_step.warm_up(), "nnrun_scan_chunk": nn_scan.warm_up(),
                           "torch_first_steps": tt.warm_up()}
    best = {"nnrun_step": 0.0, "nnrun_scan": 0.0, "torch": 0.0}
    for w in range(args.windows):  # interleaved, so noise on this shared machine hits all three
        best["nnrun_step"] = max(best["nnrun_step"], nn_step.images_per_s(args.steps))
        best["nnrun_scan"] = max(best["nnrun_scan"], nn_scan.images_per_s(args.steps))
        best["torch"] = max(best["torch"], tt.images_per_s(args.steps))
        print(f"  window {w + 1}: " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in best.items()), flush=True)
    result["images_per_s"] = {k: round(v) for k, v in best.items()}
    result["nnrun_over_torch"] = round(max(best["nnrun_step"], best["nnrun_scan"]) / best["torch"], 3)
    del nn_scan

    if not args.no_accuracy:
        print("time to target: nnrun's default lenet5 recipe", flush=True)
        nn = NnrunTrainer([])
        nn.warm_up()
        nn = NnrunTrainer([])  # fresh state: the recipe from step 0, compiled already in-process
        result["nnrun_recipe"] = {"epochs": nn.exp.trainer.epochs, "lr": nn.exp.optim.lr,
                                  "schedule": nn.exp.schedule.name}
        result["nnrun_time_to_target"] = time_to_target(nn, nn.exp.trainer.epochs, args.target, "nnrun")
        print(f"time to target: PyTorch, Adam lr={args.torch_lr}, {args.torch_epochs} epochs", flush=True)
        tt = TorchTrainer(nn.setup.dataset, lr=args.torch_lr)
        result["torch_time_to_target"] = time_to_target(tt, args.torch_epochs, args.target, "torch")

    out = Path(__file__).parent / "results" / f"lenet5_speed-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if "time_to_target" not in k}, indent=2))
    for k in ("nnrun_time_to_target", "torch_time_to_target"):
        if k in result:
            print(k, result[k]["reached"], "final", result[k]["final_test_accuracy"])
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
