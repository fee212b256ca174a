"""Data parallelism: each training batch split over several devices of one machine.

The step stays one program: parameters and optimizer state are replicated, the batch
axis is sharded, and XLA's partitioner (GSPMD) splits the work and adds the gradient
all-reduce. Batch statistics (BatchNorm, a GAN generator's batch norm) are still those of
the whole batch, and random streams do not depend on the split (JAX's partitionable
threefry), so a run computes what it computes on one device up to float rounding.

When it pays: XLA gives one CPU device a thread pool for every op, and for the small ops of
an LSTM step (a 128 x 512 matmul, its gates) the hand-offs cost more than the work; two
devices, one per core, each running half the batch, do not hand off. conf=lstm_mnist's step
ran 1.13-1.44x PyTorch's this way (median of eight runs 1.17x) against 0.80x on one device
(benchmarks/lstm_speed.py, docs/results.md). Models whose activations keep the batch as the minor axis (the CHWN patch
convolutions of LeNet5, the GAN and ResNet on CPU) got several times slower instead, so
splitting is opt-in: nnrun starts JAX with one CPU device per core
(experiments/__init__.py sets JAX_NUM_CPU_DEVICES), and a config asks for the split.

`trainer.devices`: 1 (the default) = one device; k = the first k devices of the default
backend (the batch must divide by k); null = auto: every device of a CPU backend with
several, when they divide the batch, else one.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from experiments.errors import UserError

AXIS = "batch"


def batch_mesh(devices: Optional[int], batch_size: int, vectorized: bool = False) -> Optional[Mesh]:
    """The devices a batch is split over, or None for one device."""
    available = jax.local_devices()
    if devices == 1:
        return None
    if devices is None:  # auto
        n = len(available)
        if vectorized or n < 2 or jax.default_backend() != "cpu" or batch_size % n:
            return None
    else:  # k: TrainerConfig checked that k devices exist and divide the batch
        n = devices
        if vectorized:  # the sweep planner runs such trials alone (sweep/vectorized.py)
            raise UserError("a vectorised group trains on one device: set trainer.devices=1 (or null)")
    return Mesh(np.asarray(available[:n]), (AXIS,))


class Placement:
    """Where a run's state and data live: one device (mesh None) or replicated over a mesh
    whose batches are sharded."""

    def __init__(self, mesh: Optional[Mesh] = None):
        self.mesh = mesh

    @property
    def devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def replicate(self, tree: Any) -> Any:
        if self.mesh is None:
            return jax.device_put(tree)
        return jax.device_put(tree, NamedSharding(self.mesh, PartitionSpec()))

    def shard_batch(self, batch: dict, size: int) -> dict:
        """Inside a traced step: split the batch's arrays (leading axis `size`) over the mesh."""
        if self.mesh is None:
            return batch
        sharded = NamedSharding(self.mesh, PartitionSpec(AXIS))

        def constrain(a):
            if getattr(a, "ndim", 0) and a.shape[0] == size and size % self.mesh.size == 0:
                return jax.lax.with_sharding_constraint(a, sharded)
            return a

        return jax.tree.map(constrain, batch)

    def one_at_a_time(self, fn: Callable) -> Callable:
        """`fn` (a jitted program) waiting for its result when split over several devices.
        XLA-CPU runs every device's part on one shared pool of a thread per core; with two
        programs in flight (JAX dispatches asynchronously), each can hold a thread waiting in
        a collective for a part of itself that has no thread left to run on, and XLA aborts
        the process after 40 s (seen with LeNet5's one-dispatch-per-step tail of an epoch)."""
        if self.mesh is None:
            return fn

        def waited(*args):
            return jax.block_until_ready(fn(*args))

        return waited

    def gather(self, tree: Any) -> Any:
        """A copy on the first device, for code outside the step and the evaluator (trainers'
        epoch-end hooks, figures) that meets arrays of its own."""
        if self.mesh is None:
            return tree
        return jax.device_put(tree, self.mesh.devices.flat[0])
