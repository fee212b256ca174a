"""LeNet5 training speed: nnrun's loop against the same model in plain PyTorch, on the same
data, each framework in its own process.

Measures, for each framework:
- compile/warm-up time and steady-state training images/s (best of several timed windows;
  the frameworks alternate, round after round, so that machine noise hits both);
- time to 99.0% MNIST test accuracy with *the same recipe* in both arms, over several
  seeds: nnrun's `conf=lenet5` recipe (Adam, lr 0.002 with linear warmup and cosine decay
  over 12 epochs, batch 128, LeCun-normal initialisation), and PyTorch given exactly that
  recipe: for each seed, nnrun's initial parameters copied into the PyTorch model,
  nnrun's learning rate for every step, and nnrun's example order for every epoch. Before
  training, the two models' logits on the first batch are compared (recorded). Training
  time only: the test set is evaluated after each epoch, outside the clock;
- optionally (`--default-recipe`) PyTorch's own usual recipe as a separate line: constant
  Adam 1e-3, PyTorch's default initialisation and shuffling, 10 epochs. That compares
  recipes, not frameworks, and is reported apart.

Writes benchmarks/results/lenet5_speed-<timestamp>.json.

    pip install -e '.[bench]'        # torch==2.13.0, CPU build
    python benchmarks/lenet5_speed.py                              # throughput + same recipe, seeds 0 1 2
    python benchmarks/lenet5_speed.py --default-recipe             # ... and PyTorch's own recipe per seed
    python benchmarks/lenet5_speed.py --no-accuracy                # throughput only (about 4 min on 2 cores)
    python benchmarks/lenet5_speed.py --no-throughput --seeds 0    # one seed of time to accuracy
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

BATCH = 128
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- nnrun


class NnrunTrainer:
    """nnrun's own step, chunk and `run_chunk` (experiments/training/driver.py), driven
    epoch by epoch as `nnrun train` drives them."""

    def __init__(self, overrides: list[str], scan: bool | None = None, chunk: int | None = None,
                 batch: int = BATCH, conf: str = "lenet5"):
        """scan, chunk: None means the experiment's own trainer.scan and log_every."""
        import jax

        from experiments.config import validate
        from experiments.data import load_dataset
        from experiments.hydra_bridge import compose, task_config
        from experiments.training import driver as d
        from experiments.training.parallel import Placement, batch_mesh

        self.jax, self.d = jax, d
        self.batch = batch
        self.exp = validate(task_config(compose(conf, [f"trainer.batch_size={batch}", *overrides])[0]))
        self.data = load_dataset(self.exp.data)
        self.steps = d.build_steps(self.exp, self.data)
        self.steps_per_epoch = d.steps_per_epoch(self.exp, self.data)
        self.key = jax.random.key(self.exp.seed)
        self.placement = Placement(batch_mesh(self.exp.trainer.devices, batch))  # as `nnrun train` splits a batch
        self.hp = self.placement.replicate({"key": self.key})
        step = d.make_step(lambda h: self.steps, self.data.train, batch, self.exp.data.augment, self.placement)
        one_at_a_time = self.placement.one_at_a_time  # as the driver dispatches split programs
        self.step = one_at_a_time(jax.jit(step, donate_argnums=0))
        self.chunk_len = chunk or self.exp.trainer.log_every
        scan = d.scan_pays(self.exp) if scan is None else scan
        self.chunk = one_at_a_time(jax.jit(d.make_chunk(step, self.chunk_len), donate_argnums=0)) if scan else None
        self.arrays = self.placement.replicate(self.data.train.device_arrays())
        self.reset()
        self.evaluator = d.Evaluator(self.steps, 1000, placement=self.placement)

    def reset(self) -> None:
        """The state at step 0, as `nnrun train` starts from."""
        self.state = self.placement.replicate(self.d.initial_state(self.steps, self.key, self.data))

    def plan(self, epoch: int) -> dict:
        return self.placement.replicate(self.d.epoch_plan(self.key, epoch, len(self.data.train), self.data.train))

    def warm_up(self) -> float:
        """Compile what the loop uses (with scan on, the step too: it runs an epoch's
        remainder); returns the seconds spent."""
        t = time.perf_counter()
        plan = self.plan(0)
        for fn in filter(None, (self.step, self.chunk)):
            self.state = fn(self.state, self.hp, self.arrays, plan, 0)
        self.jax.block_until_ready(self.state.step)
        return time.perf_counter() - t

    def images_per_s(self, steps: int) -> float:
        plan = self.plan(0)
        t = time.perf_counter()
        if self.chunk is not None:
            steps = max(1, steps // self.chunk_len) * self.chunk_len
            for c in range(steps // self.chunk_len):
                self.state = self.chunk(self.state, self.hp, self.arrays, plan, c * self.chunk_len)
        else:
            for i in range(steps):
                self.state = self.step(self.state, self.hp, self.arrays, plan, i)
        self.jax.block_until_ready(self.state.step)
        return steps * self.batch / (time.perf_counter() - t)

    def train_epoch(self, epoch: int) -> float:
        """One epoch exactly as `nnrun train` runs it: full chunks scanned (if on), the
        remainder step by step."""
        from experiments.runs import StopRequest

        plan = self.plan(epoch)
        t = time.perf_counter()
        self.state = self.d._zero_sums(self.state)
        i, steps = 0, self.steps_per_epoch
        while i < steps:
            n = min(self.chunk_len, steps - i)
            self.state, n = self.d.run_chunk(self.state, (self.hp, self.arrays, plan), i, n, self.step, self.chunk,
                                             self.chunk_len, StopRequest(signals=()))
            i += n
        self.jax.block_until_ready(self.state.step)
        return time.perf_counter() - t

    def test_accuracy(self) -> float:
        return self.evaluator(self.state.inner, self.data.test)["accuracy"]

    def export_recipe(self, epochs: int, path: Path) -> dict:
        """What PyTorch needs to train with this recipe: the initial parameters in PyTorch's
        layouts, the learning rate of every step, the example order of every epoch, the
        data arrays, and this model's logits on the first batch (to check the copy)."""
        jax = self.jax
        params = jax.device_get(self.state.inner.params)
        total = self.steps_per_epoch * epochs
        lrs = np.asarray(jax.jit(jax.vmap(self.steps.schedule))(jax.numpy.arange(total)), np.float64)
        orders = np.stack([np.asarray(self.plan(e)["order"]) for e in range(epochs)]).astype(np.int64)
        first = orders[0, :BATCH]
        logits = np.asarray(self.steps.outputs(self.state.inner, {"x": self.data.train.x[first]}))
        conv = lambda k: np.ascontiguousarray(np.asarray(k).transpose(3, 2, 0, 1))  # HWIO -> OIHW
        dense = lambda k: np.ascontiguousarray(np.asarray(k).T)  # (in, out) -> (out, in)
        torch_params = {
            "C1.weight": conv(params["C1"]["kernel"]), "C1.bias": params["C1"]["bias"],
            "C3.weight": conv(params["C3"]["kernel"]), "C3.bias": params["C3"]["bias"],
            "C5.weight": conv(params["C5"]["kernel"]), "C5.bias": params["C5"]["bias"],
            "F6.weight": dense(params["F6"]["dense"]["kernel"]), "F6.bias": params["F6"]["dense"]["bias"],
            "Out.weight": dense(params["Out"]["dense"]["kernel"]), "Out.bias": params["Out"]["dense"]["bias"],
        }
        np.savez(path, lrs=lrs, orders=orders, first_logits=logits, train_x=self.data.train.x,
                 train_y=self.data.train.y, test_x=self.data.test.x, test_y=self.data.test.y,
                 **{f"param:{k}": np.asarray(v, np.float32) for k, v in torch_params.items()})
        o = self.exp.optim
        return {"epochs": epochs, "lr": o.lr, "schedule": self.exp.schedule.name, "optim": o.name,
                "b1": o.b1, "b2": o.b2, "eps": o.eps, "weight_decay": o.weight_decay, "clip_norm": o.clip_norm,
                "batch": self.batch, "seed": self.exp.seed, "steps_per_epoch": self.steps_per_epoch,
                "lr_first_steps": [float(x) for x in lrs[:3]], "lr_peak": float(lrs.max()), "lr_last": float(lrs[-1])}


# ----------------------------------------------------------------------------- PyTorch


class TorchTrainer:
    """The same LeNet5 (61,706 params), Adam, batch 128, written the usual PyTorch way.

    With `recipe` (an npz from NnrunTrainer.export_recipe): nnrun's initial parameters,
    its learning rate at every step and its example order in every epoch. Without: the
    PyTorch defaults (its own initialisation and shuffling) and a constant `lr`."""

    def __init__(self, data: dict, lr: float, seed: int = 0, recipe: dict | None = None):
        import torch
        from torch import nn

        torch.manual_seed(seed)
        self.torch = torch
        self.model = nn.Sequential()
        for name, layer in [("pad", nn.ZeroPad2d(2)),
                            ("C1", nn.Conv2d(1, 6, 5)), ("a1", nn.Tanh()), ("S2", nn.AvgPool2d(2)), ("a2", nn.Tanh()),
                            ("C3", nn.Conv2d(6, 16, 5)), ("a3", nn.Tanh()), ("S4", nn.AvgPool2d(2)), ("a4", nn.Tanh()),
                            ("C5", nn.Conv2d(16, 120, 5)), ("a5", nn.Tanh()), ("flat", nn.Flatten()),
                            ("F6", nn.Linear(120, 84)), ("a6", nn.Tanh()), ("Out", nn.Linear(84, 10))]:
            self.model.add_module(name, layer)
        assert sum(p.numel() for p in self.model.parameters()) == 61706
        self.recipe = recipe
        if recipe is not None:
            state = {k.split(":", 1)[1]: torch.from_numpy(np.asarray(v)) for k, v in recipe.items()
                     if k.startswith("param:")}
            self.model.load_state_dict(state, strict=True)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
        self.loss = nn.CrossEntropyLoss()
        to_nchw = lambda x: torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
        self.X, self.Y = to_nchw(data["train_x"]), torch.from_numpy(np.asarray(data["train_y"]).astype(np.int64))
        self.Xt, self.Yt = to_nchw(data["test_x"]), torch.from_numpy(np.asarray(data["test_y"]).astype(np.int64))
        self.steps_per_epoch = len(self.X) // BATCH
        self.gen = torch.Generator().manual_seed(seed)
        self.t = 0  # optimizer steps taken (indexes the recipe's learning rates)

    def first_logits_diff(self) -> float:
        """Largest |difference| between this model's logits and nnrun's on the recipe's first batch."""
        self.model.eval()
        idx = self.torch.from_numpy(self.recipe["orders"][0, :BATCH])
        with self.torch.no_grad():
            ours = self.model(self.X[idx]).numpy()
        return float(np.abs(ours - self.recipe["first_logits"]).max())

    def _order(self, epoch: int):
        if self.recipe is not None:
            return self.torch.from_numpy(self.recipe["orders"][epoch])
        return self.torch.randperm(len(self.X), generator=self.gen)

    def _steps(self, perm, start: int, n: int) -> None:
        lrs = self.recipe["lrs"] if self.recipe is not None else None
        for i in range(start, start + n):
            idx = perm[i * BATCH:(i + 1) * BATCH]
            if lrs is not None:
                for group in self.opt.param_groups:
                    group["lr"] = float(lrs[self.t])
            self.opt.zero_grad(set_to_none=True)
            self.loss(self.model(self.X[idx]), self.Y[idx]).backward()
            self.opt.step()
            self.t += 1

    def warm_up(self) -> float:
        t = self.torch.randperm(len(self.X), generator=self.gen)
        start = time.perf_counter()
        self._steps(t, 0, 2)
        return time.perf_counter() - start

    def images_per_s(self, steps: int) -> float:
        perm = self.torch.randperm(len(self.X), generator=self.gen)
        t = time.perf_counter()
        self._steps(perm, 0, steps)
        return steps * BATCH / (time.perf_counter() - t)

    def train_epoch(self, epoch: int) -> float:
        self.model.train()
        perm = self._order(epoch)
        t = time.perf_counter()
        self._steps(perm, 0, self.steps_per_epoch)
        return time.perf_counter() - t

    def test_accuracy(self) -> float:
        self.model.eval()
        with self.torch.no_grad():
            pred = self.model(self.Xt).argmax(1)
        return float((pred == self.Yt).float().mean())


# ----------------------------------------------------------------------------- one measurement per process


def time_to_target(trainer, epochs: int, target: float, label: str) -> dict:
    clock, curve, reached = 0.0, [], None
    for epoch in range(epochs):
        clock += trainer.train_epoch(epoch)
        acc = trainer.test_accuracy()
        curve.append({"epoch": epoch + 1, "train_s": round(clock, 2), "test_accuracy": acc})
        print(f"  {label} epoch {epoch + 1}: test acc {acc:.4f} after {clock:.1f} s of training", flush=True)
        if reached is None and acc >= target:
            reached = {"epoch": epoch + 1, "train_s": round(clock, 2)}
    return {"curve": curve, "reached": reached, "final_test_accuracy": curve[-1]["test_accuracy"],
            "train_s": round(clock, 2)}


def load_npz(path: str) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def measure(args: argparse.Namespace) -> dict:
    """One arm's measurements, in this process only (see main)."""
    out: dict = {"load_before": os.getloadavg()}
    if args.only == "nnrun-throughput":
        step, scan = NnrunTrainer(args.overrides, scan=False), NnrunTrainer(args.overrides, scan=True)
        out["compile_s"] = {"step": step.warm_up(), "scan_chunk": scan.warm_up()}
        arms = {"nnrun_step": step, "nnrun_scan": scan}
    elif args.only == "torch-throughput":
        torch_trainer = TorchTrainer(load_npz(args.recipe), lr=1e-3)
        out["compile_s"] = {"first_steps": torch_trainer.warm_up()}
        arms = {"torch": torch_trainer}
    elif args.only == "nnrun-recipe":
        # the recipe as `nnrun train conf=lenet5 seed=S` runs it: its chunk length and scan default
        trainer = NnrunTrainer([f"seed={args.seed}", *args.overrides])
        out["recipe"] = trainer.export_recipe(trainer.exp.trainer.epochs, Path(args.recipe))
        out["compile_s"] = trainer.warm_up()  # compile outside the clock ...
        trainer.reset()  # ... then the recipe from step 0
        out["time_to_target"] = time_to_target(trainer, trainer.exp.trainer.epochs, args.target,
                                               f"nnrun seed {args.seed}")
        return out
    elif args.only == "torch-recipe":
        recipe = load_npz(args.recipe)
        trainer = TorchTrainer(recipe, lr=float(recipe["lrs"][0]), seed=args.seed, recipe=recipe)
        out["first_batch_logits_max_abs_diff"] = trainer.first_logits_diff()
        print(f"  torch seed {args.seed}: logits on the first batch differ from nnrun's by at most "
              f"{out['first_batch_logits_max_abs_diff']:.2e}", flush=True)
        out["time_to_target"] = time_to_target(trainer, len(recipe["orders"]), args.target, f"torch seed {args.seed}")
        return out
    elif args.only == "torch-default":
        trainer = TorchTrainer(load_npz(args.recipe), lr=args.torch_lr, seed=args.seed)
        out["recipe"] = {"epochs": args.torch_epochs, "lr": args.torch_lr, "schedule": "constant",
                         "init": "PyTorch default", "order": "torch.randperm", "seed": args.seed}
        out["time_to_target"] = time_to_target(trainer, args.torch_epochs, args.target,
                                               f"torch default recipe seed {args.seed}")
        return out
    best = {k: 0.0 for k in arms}
    for _ in range(args.windows):
        for k, trainer in arms.items():
            best[k] = max(best[k], trainer.images_per_s(args.steps))
    out["images_per_s"] = {k: round(v) for k, v in best.items()}
    print("  " + ", ".join(f"{k} {v:,.0f} img/s" for k, v in best.items()), flush=True)
    return out


# ----------------------------------------------------------------------------- driver


def summarise(runs: list[dict]) -> dict:
    reached = [r["time_to_target"]["reached"] for r in runs]
    hit = [x for x in reached if x]
    return {"seeds": [r["seed"] for r in runs], "reached": reached,
            "reached_in": f"{len(hit)} of {len(runs)} seeds",
            "epoch_to_target": [x["epoch"] if x else None for x in reached],
            "train_s_to_target": [x["train_s"] if x else None for x in reached],
            "mean_train_s_to_target": round(sum(x["train_s"] for x in hit) / len(hit), 2) if hit else None,
            "final_test_accuracy": [r["time_to_target"]["final_test_accuracy"] for r in runs],
            "total_train_s": [r["time_to_target"]["train_s"] for r in runs]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=200, help="steps per timed throughput window")
    p.add_argument("--windows", type=int, default=3, help="timed windows per arm and round (best is kept)")
    p.add_argument("--rounds", type=int, default=2, help="alternating nnrun/torch rounds of throughput")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the time-to-accuracy runs")
    p.add_argument("--no-accuracy", action="store_true", help="skip the time-to-accuracy runs")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput rounds")
    p.add_argument("--default-recipe", action="store_true",
                   help="also time PyTorch's own recipe (constant lr, its init), reported separately")
    p.add_argument("--torch-epochs", type=int, default=10, help="epochs of PyTorch's own recipe")
    p.add_argument("--torch-lr", type=float, default=1e-3, help="constant lr of PyTorch's own recipe")
    p.add_argument("--target", type=float, default=0.99)
    p.add_argument("--overrides", nargs="*", default=[],
                   help="extra nnrun overrides for every arm (smoke tests: trainer.epochs=1 data.train_subset=5000)")
    p.add_argument("--only", help=argparse.SUPPRESS)  # internal: one measurement in this process
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--recipe", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        print("RESULT " + json.dumps(measure(args)), flush=True)
        return

    # Each framework runs in its own process, one at a time: in one process XLA's and
    # PyTorch's thread pools fight over the two cores and both slow down several-fold.
    import jax
    import torch

    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"{platform.machine()}, {os.cpu_count()} cpus, load {os.getloadavg()}", flush=True)
    result: dict = {"date": datetime.now().isoformat(timespec="seconds"), "command": " ".join(["python", *sys.argv]),
                    "batch": BATCH, "jax": jax.__version__, "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "backend": jax.default_backend(),
                    "cpus": os.cpu_count(), "load_before": os.getloadavg()}

    def child(only: str, seed: int, recipe: Path) -> dict:
        cmd = [sys.executable, __file__, "--only", only, "--seed", str(seed), "--recipe", str(recipe),
               "--steps", str(args.steps), "--windows", str(args.windows), "--torch-epochs", str(args.torch_epochs),
               "--torch-lr", str(args.torch_lr), "--target", str(args.target), "--overrides", *args.overrides]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        if proc.returncode != 0:
            sys.exit(f"the {only} measurement failed:\n{proc.stderr[-3000:]}")
        print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("RESULT")), flush=True)
        out = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))[7:])
        return {"seed": seed, **out, "load_after": os.getloadavg()}

    def save() -> Path:
        path = REPO / "benchmarks" / "results" / f"lenet5_speed-{stamp}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        return path

    stamp = f"{datetime.now():%Y%m%d-%H%M%S}"
    with tempfile.TemporaryDirectory(prefix="nnrun-bench-") as tmp:
        recipes = {s: Path(tmp) / f"recipe-seed{s}.npz" for s in args.seeds}
        if not args.no_accuracy:  # same recipe: nnrun first (it writes the recipe), then PyTorch with it
            runs = {"nnrun": [], "torch": []}
            for s in args.seeds:
                runs["nnrun"].append(child("nnrun-recipe", s, recipes[s]))
                runs["torch"].append(child("torch-recipe", s, recipes[s]))
                result["same_recipe"] = {"recipe": runs["nnrun"][0]["recipe"], "runs": runs,
                                         "summary": {fw: summarise(r) for fw, r in runs.items()}}
                save()  # partial results survive an interrupted benchmark
        data_npz = next((r for r in recipes.values() if r.exists()), None)
        if data_npz is None:  # throughput only: the data arrays still come from nnrun's loader
            data_npz = recipes[args.seeds[0]]
            NnrunTrainer([f"seed={args.seeds[0]}", *args.overrides]).export_recipe(1, data_npz)
        if not args.no_throughput:
            result["rounds"] = []
            for _ in range(args.rounds):
                result["rounds"].append({"nnrun": child("nnrun-throughput", 0, data_npz),
                                         "torch": child("torch-throughput", 0, data_npz)})
            best: dict = {}
            for rnd in result["rounds"]:
                for fw in rnd.values():
                    for k, v in fw["images_per_s"].items():
                        best[k] = max(best.get(k, 0), v)
            result["images_per_s"] = best
            result["nnrun_over_torch"] = round(max(best["nnrun_step"], best["nnrun_scan"]) / best["torch"], 3)
            result["compile_s"] = {fw: d["compile_s"] for fw, d in result["rounds"][0].items()}
            save()
        if args.default_recipe and not args.no_accuracy:
            default = [child("torch-default", s, data_npz) for s in args.seeds]
            result["torch_default_recipe"] = {"recipe": default[0]["recipe"], "runs": default,
                                              "summary": summarise(default)}
    result["load_after"] = os.getloadavg()
    path = save()
    for key in ("images_per_s", "nnrun_over_torch", "compile_s"):
        if key in result:
            print(key, json.dumps(result[key]))
    for name in ("same_recipe", "torch_default_recipe"):
        if name in result:
            summary = result[name]["summary"]
            for fw, s in (summary.items() if name == "same_recipe" else [("torch", summary)]):
                print(f"{name} {fw}: reached {args.target:.2%} in {s['reached_in']}, epochs {s['epoch_to_target']}, "
                      f"train s {s['train_s_to_target']}, final {s['final_test_accuracy']}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
