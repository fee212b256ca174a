"""Training loops: a registry of loops, each driving one model family.

A loop owns everything between "validated experiment + run directory" and "metrics":
the supervised gradient loop, the Hebbian loop for Hopfield networks, and later the
adversarial and contrastive-divergence loops. The CLI only looks a loop up by name.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from experiments.registry import Registry


@dataclass(frozen=True)
class LoopEntry:
    schema: type  # the trainer config dataclass
    train: Callable[..., dict]  # (experiment, run, stop request) -> summary fields
    evaluate: Callable[..., dict]  # (experiment, run_dir, split, which) -> metrics
    uses_optimizer: bool
    description: str


LOOPS: Registry[LoopEntry] = Registry("trainer", __name__)


def register_loop(name: str, schema: type, evaluate: Callable[..., dict], uses_optimizer: bool, description: str):
    def decorator(train: Callable[..., dict]):
        LOOPS.register(name)(LoopEntry(schema, train, evaluate, uses_optimizer, description))
        return train

    return decorator
