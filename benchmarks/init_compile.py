"""Compile time of a run's initial state (driver.state_initializer) with XLA's default
backend optimisations against without them (driver.compiled_for_one_use, what nnrun uses on
CPU), for a few shipped experiments.

    python benchmarks/init_compile.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXPERIMENTS = (("lenet5", []), ("lstm_mnist", []), ("resnet20_cifar10", ["data=mnist"]), ("gan_mnist", []))


def main() -> None:
    import jax

    from experiments.config import validate
    from experiments.data import load_dataset
    from experiments.hydra_bridge import compose, task_config
    from experiments.training import driver

    print(f"jax {jax.__version__} ({jax.default_backend()})")
    for conf, overrides in EXPERIMENTS:
        exp = validate(task_config(compose(conf, overrides)[0]))
        data = load_dataset(exp.data)
        steps = driver.build_steps(exp, data)
        sample = data.train.sample(2)

        def init(key):
            return steps.init(driver.init_key(key), sample)

        key = jax.random.key(0)
        times = {}
        for level in (None, 0):  # None: XLA's default
            lowered = jax.jit(init).lower(key)
            t = time.perf_counter()
            lowered.compile(**({} if level is None else {"compiler_options": {"xla_backend_optimization_level": level}}))
            times[level] = time.perf_counter() - t
        print(f"{conf:18s} default {times[None]:6.2f} s   unoptimised {times[0]:6.2f} s", flush=True)


if __name__ == "__main__":
    main()
