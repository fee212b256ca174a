"""nnrun's library: data, models, training loops, checkpoints, metrics and plots.

Nothing here knows about the command line; `cli/` is a thin layer on top.
"""

import os
import sys


def _one_cpu_device_per_core() -> None:
    """JAX with one CPU device per core, over which the driver splits each batch
    (experiments/training/parallel.py). A value the user exported (JAX_NUM_CPU_DEVICES=1)
    wins; once JAX's backends have started, the count can no longer change."""
    if "JAX_NUM_CPU_DEVICES" in os.environ:
        return
    os.environ["JAX_NUM_CPU_DEVICES"] = str(os.cpu_count() or 1)
    if "jax" in sys.modules:  # imported before us: it read the environment already
        try:
            sys.modules["jax"].config.update("jax_num_cpu_devices", os.cpu_count() or 1)
        except Exception:  # noqa: BLE001 - backends already started: stay with their devices
            pass


_one_cpu_device_per_core()
