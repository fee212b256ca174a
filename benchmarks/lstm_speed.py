"""LSTM training speed: nnrun's lstm_mnist train step against PyTorch's nn.LSTM, in one
process, rounds interleaved so that machine noise hits every arm alike.

Arms (all: LSTM 28 -> 128 units over 28 rows of MNIST, last output -> dense 10, softmax
cross-entropy, Adam with global-norm clipping 1.0, batch 128, the same MNIST training images):
- `nnrun`: the real thing: `conf=lstm_mnist`'s step through the driver (make_step,
  make_chunk: `trainer.log_every` steps per compiled lax.scan), as `nnrun train` runs it,
  with the config's `trainer.devices` (null: the batch split over the CPU cores).
- `torch`: nn.LSTM(batch_first) + nn.Linear, torch.optim.Adam, clip_grad_norm_, one
  Python step per batch, torch's threads = this machine's cores (XLA's pool uses them all).
- levers (`--levers`): the same step written in plain JAX, one variable at a time, chunked
  like nnrun's, to measure what each implementation choice is worth:
    flax_rnn      Flax's nn.RNN(OptimizedLSTMCell): nnrun's model before issue 10
    cells         nnrun's own layer (experiments/models/rnn.py: fused step, hand-written
                  backward pass) without the driver around it
    gates4        per step: x_t and h each times 4 separate gate matrices (8 matmuls)
    fused_xh      per step: one [x_t, h] @ W for all four gates
    hoisted       X @ Wx for all steps in one matmul before the loop; h @ Wh (fused) inside
    hoisted_u<k>  the same with lax.scan(unroll=k)
    hoisted_bf16  the same with bfloat16 matmul inputs (float32 accumulation and state)
    batch_major   hoisted, but the loop indexes (batch, time, ...) arrays per step

Prints sequences/s per arm (median and best over the rounds) and nnrun / torch; writes
benchmarks/results/lstm_speed-<timestamp>.json.

    pip install -e '.[bench]'                  # torch==2.13.0, CPU build
    python benchmarks/lstm_speed.py            # nnrun vs torch, 5 rounds
    python benchmarks/lstm_speed.py --levers   # ... and every lever
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

BATCH, HIDDEN, FEATURES, STEPS_T, CLASSES = 128, 128, 28, 28, 10
LR, CLIP = 0.002, 1.0


# ----------------------------------------------------------------------------- nnrun


class Nnrun:
    """conf=lstm_mnist's step and chunk through the driver (lenet5_speed's harness)."""

    def __init__(self, overrides: list[str]):
        from lenet5_speed import NnrunTrainer

        self.t = NnrunTrainer(overrides, conf="lstm_mnist", batch=BATCH)
        self.chunk = self.t.chunk_len

    def warm_up(self) -> float:
        return self.t.warm_up()

    def seq_per_s(self, steps: int) -> float:
        return self.t.images_per_s(steps)


# ----------------------------------------------------------------------------- torch


class Torch:
    def __init__(self, x: np.ndarray, y: np.ndarray, threads: int):
        import torch
        from torch import nn

        torch.set_num_threads(threads)
        torch.manual_seed(0)
        self.torch = torch

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = nn.LSTM(FEATURES, HIDDEN, batch_first=True)
                self.out = nn.Linear(HIDDEN, CLASSES)

            def forward(self, x):
                return self.out(self.lstm(x)[0][:, -1])

        self.model = Net()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss = nn.CrossEntropyLoss()
        self.X, self.Y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
        self.gen = torch.Generator().manual_seed(0)

    def _steps(self, n: int) -> None:
        torch = self.torch
        perm = torch.randperm(len(self.X), generator=self.gen)
        for i in range(n):
            idx = perm[(i * BATCH) % (len(perm) - BATCH):][:BATCH]
            self.opt.zero_grad(set_to_none=True)
            loss = self.loss(self.model(self.X[idx]), self.Y[idx])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
            self.opt.step()

    def warm_up(self) -> float:
        t = time.perf_counter()
        self._steps(5)
        return time.perf_counter() - t

    def seq_per_s(self, steps: int) -> float:
        t = time.perf_counter()
        self._steps(steps)
        return steps * BATCH / (time.perf_counter() - t)


# ----------------------------------------------------------------------------- levers (plain JAX)


def lever_forward(variant: str):
    """(params, x (B, T, F)) -> logits, for one implementation variant."""
    import jax
    import jax.numpy as jnp

    sig = jax.nn.sigmoid

    def cell(z, c):
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = sig(f) * c + sig(i) * jnp.tanh(g)
        return c, sig(o) * jnp.tanh(c)

    def head(p, h):
        return h @ p["out_k"] + p["out_b"]

    if variant == "flax_rnn":
        from flax import linen as nn

        rnn = nn.RNN(nn.OptimizedLSTMCell(HIDDEN))
        return lambda p, x: head(p, rnn.apply({"params": p["flax"]}, x)[:, -1])

    if variant == "cells":
        from experiments.models import rnn

        def cells(p, x):
            w = {"ik": p["wx"], "ib": p["b"], "hk": p["wh"], "hb": None}
            _, (c, h) = rnn.scan_layer("lstm", jnp.tanh, w, jnp.swapaxes(x, 0, 1), None,
                                       rnn.zero_state("lstm", x.shape[0], HIDDEN))
            return head(p, h)
        return cells

    def forward(p, x):
        b = x.shape[0]
        zeros = jnp.zeros((b, HIDDEN), jnp.float32)
        if variant == "gates4":
            wx, wh = jnp.split(p["wx"], 4, axis=1), jnp.split(p["wh"], 4, axis=1)
            bs = jnp.split(p["b"], 4)

            def step(s, x_t):
                c, h = s
                z = jnp.concatenate([x_t @ wx[k] + h @ wh[k] + bs[k] for k in range(4)], -1)
                c, h = cell(z, c)
                return (c, h), None
            (c, h), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
            return head(p, h)
        if variant == "fused_xh":
            w = jnp.concatenate([p["wx"], p["wh"]], 0)

            def step(s, x_t):
                c, h = s
                c, h = cell(jnp.concatenate([x_t, h], -1) @ w + p["b"], c)
                return (c, h), None
            (c, h), _ = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(x, 0, 1))
            return head(p, h)
        dtype = jnp.bfloat16 if variant.endswith("bf16") else jnp.float32
        unroll = int(variant.split("_u")[1]) if "_u" in variant else 1
        if variant == "batch_major":
            xp = x @ p["wx"] + p["b"]  # (B, T, 4H), sliced per step

            def step(s, t):
                c, h = s
                c, h = cell(jax.lax.dynamic_index_in_dim(xp, t, 1, keepdims=False) + h @ p["wh"], c)
                return (c, h), None
            (c, h), _ = jax.lax.scan(step, (zeros, zeros), jnp.arange(x.shape[1]))
            return head(p, h)
        xp = (jnp.swapaxes(x, 0, 1).astype(dtype) @ p["wx"].astype(dtype)).astype(jnp.float32) + p["b"]
        wh = p["wh"].astype(dtype)

        def step(s, xp_t):
            c, h = s
            c, h = cell(xp_t + (h.astype(dtype) @ wh).astype(jnp.float32), c)
            return (c, h), None
        (c, h), _ = jax.lax.scan(step, (zeros, zeros), xp, unroll=unroll)
        return head(p, h)

    return forward


class Lever:
    """One variant's train step, `chunk` steps per compiled lax.scan, batches gathered on the
    device from a permutation (as nnrun's driver does)."""

    def __init__(self, variant: str, x, y, chunk: int):
        """x, y: device arrays, shared by every lever (one copy of MNIST in memory)."""
        import jax
        import jax.numpy as jnp
        import optax

        self.jax, self.chunk = jax, chunk
        k = jax.random.split(jax.random.key(0), 4)
        init = jax.nn.initializers
        params = {"wx": init.lecun_normal()(k[0], (FEATURES, 4 * HIDDEN)),
                  "wh": init.orthogonal()(k[1], (HIDDEN, 4 * HIDDEN)), "b": jnp.zeros(4 * HIDDEN),
                  "out_k": init.lecun_normal()(k[2], (HIDDEN, CLASSES)), "out_b": jnp.zeros(CLASSES)}
        if variant == "flax_rnn":
            from flax import linen as nn

            params = {"flax": nn.RNN(nn.OptimizedLSTMCell(HIDDEN)).init(k[3], jnp.zeros((2, STEPS_T, FEATURES)))["params"],
                      "out_k": params["out_k"], "out_b": params["out_b"]}
        forward = lever_forward(variant)
        tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
        self.x, self.y = x, y

        def step(state, idx):
            params, opt = state

            def loss(p):
                logits = forward(p, self.x[idx])
                return optax.softmax_cross_entropy_with_integer_labels(logits, self.y[idx]).mean()

            g = jax.grad(loss)(params)
            updates, opt = tx.update(g, opt, params)
            return (optax.apply_updates(params, updates), opt), None

        def run(state, order):
            return jax.lax.scan(step, state, order.reshape(chunk, BATCH))[0]

        self.run = jax.jit(run, donate_argnums=0)
        self.state = (params, tx.init(params))
        self.key = jax.random.key(1)

    def _chunks(self, n: int) -> None:
        for _ in range(n):
            self.key, sub = self.jax.random.split(self.key)
            order = self.jax.random.permutation(sub, len(self.x))[:self.chunk * BATCH]
            self.state = self.run(self.state, order)
        self.jax.block_until_ready(self.state)

    def warm_up(self) -> float:
        t = time.perf_counter()
        self._chunks(1)
        return time.perf_counter() - t

    def seq_per_s(self, steps: int) -> float:
        n = max(1, steps // self.chunk)
        t = time.perf_counter()
        self._chunks(n)
        return n * self.chunk * BATCH / (time.perf_counter() - t)


LEVERS = ("cells", "flax_rnn", "gates4", "fused_xh", "hoisted", "hoisted_u2", "hoisted_u4", "hoisted_u7", "hoisted_u28",
          "hoisted_bf16", "batch_major")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=200, help="train steps per arm per round")
    p.add_argument("--levers", action="store_true", help="also time each implementation lever")
    p.add_argument("--only", nargs="*", help="levers to time (default: all)")
    p.add_argument("--nnrun-overrides", nargs="*", default=[], help="e.g. model.unroll=4")
    p.add_argument("--note", default="", help="recorded in the result file, e.g. what else ran on the machine")
    args = p.parse_args()

    import jax
    import torch

    from experiments.data import load_dataset
    from experiments.config import validate
    from experiments.hydra_bridge import compose, task_config

    threads = os.cpu_count() or 1
    exp = validate(task_config(compose("lstm_mnist", [])[0]))
    data = load_dataset(exp.data)
    x, y = np.asarray(data.train.x, np.float32), np.asarray(data.train.y)
    arms = {"nnrun": Nnrun(args.nnrun_overrides), "torch": Torch(x, y, threads)}
    chunk = arms["nnrun"].chunk
    if args.levers:
        xd, yd = jax.device_put(x), jax.device_put(y.astype(np.int32))
        for v in args.only or LEVERS:
            arms[v] = Lever(v, xd, yd, chunk)
    print(f"jax {jax.__version__} ({jax.default_backend()}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), {threads} cores, {platform.processor() or platform.machine()}; "
          f"nnrun's batch split over {arms['nnrun'].t.placement.devices} device(s)", flush=True)
    compile_s = {name: arm.warm_up() for name, arm in arms.items()}
    rates: dict[str, list[float]] = {name: [] for name in arms}
    for r in range(args.rounds):
        for name, arm in arms.items():
            rates[name].append(arm.seq_per_s(args.steps))
        print(f"round {r + 1}: " + ", ".join(f"{n} {v[-1]:,.0f}" for n, v in rates.items()), flush=True)
    med = {n: statistics.median(v) for n, v in rates.items()}
    print(f"\n{'arm':14s} {'median seq/s':>13s} {'best seq/s':>11s} {'vs torch':>9s} {'compile s':>10s}")
    for n, v in rates.items():
        print(f"{n:14s} {med[n]:13,.0f} {max(v):11,.0f} {med[n] / med['torch']:8.2f}x {compile_s[n]:10.1f}")
    print(f"\nnnrun / torch (median): {med['nnrun'] / med['torch']:.2f}x")
    out = REPO / "benchmarks" / "results" / f"lstm_speed-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"jax": jax.__version__, "torch": torch.__version__, "threads": threads,
                               "rounds": args.rounds, "steps": args.steps, "batch": BATCH, "chunk": chunk,
                               "nnrun_overrides": args.nnrun_overrides, "rates": rates, "median": med,
                               "compile_s": compile_s, "ratio_nnrun_torch": med["nnrun"] / med["torch"],
                               "devices": arms["nnrun"].t.placement.devices, "note": args.note}, indent=1))
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
