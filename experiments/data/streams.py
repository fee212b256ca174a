"""Streams: a long series cut into parallel streams whose windows come in order, for
truncated backpropagation through time (a recurrent model with `model.carry: true`).

The series is cut into `streams` contiguous parts. Example e is window e // streams of
stream e % streams, and the split is not shuffled (`shuffle = False`), so with
`trainer.batch_size == streams` batch j holds window j of every stream, row s always
stream s: the state a model keeps at the end of batch j is where row s of batch j + 1
begins. Each batch also carries `first` (batch,): true on a stream's first window, where
the carried state restarts from zeros (every epoch starts the streams again).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from experiments.data import Split


class StreamWindows(Split):
    shuffle = False  # the driver keeps the examples in order (experiments/training/driver.py: epoch_plan)

    def __init__(self, series: np.ndarray, length: int, streams: int):
        from experiments.errors import UserError

        self.series, self.length, self.streams = series, int(length), int(streams)
        self.span = (len(series) - 1) // self.streams  # steps per stream (+1 for the last target)
        self.windows = self.span // self.length
        if self.streams < 1 or self.windows < 1:
            raise UserError(f"a series of {len(series)} steps cannot hold {streams} streams of windows of {length} "
                            "steps; use fewer data.streams, shorter windows or a longer series")

    @property
    def arrays(self) -> dict[str, np.ndarray]:  # type: ignore[override]
        return self._examples(np.arange(len(self)))

    def __len__(self) -> int:
        return self.windows * self.streams

    def _starts(self, idx):
        return (idx % self.streams) * self.span + (idx // self.streams) * self.length

    def _examples(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        offsets = self._starts(idx)[:, None] + np.arange(self.length)
        return {"x": self.series[offsets], "y": self.series[offsets + 1], "first": idx < self.streams}

    def device_arrays(self) -> dict[str, np.ndarray]:
        return {"series": self.series}

    def gather(self, arrays: dict, idx, phase=0) -> dict:
        import jax
        import jax.numpy as jnp

        starts = self._starts(idx)
        cut = lambda s: jax.lax.dynamic_slice_in_dim(arrays["series"], s, self.length)  # noqa: E731
        return {"x": jax.vmap(cut)(starts), "y": jax.vmap(cut)(starts + 1), "first": idx < self.streams}

    def epoch_phase(self, key) -> Any:
        return 0

    def sample(self, n: int = 2) -> dict[str, np.ndarray]:
        # a whole first batch, whatever n: a carried state has one row per stream
        return self._examples(np.arange(max(n, self.streams)))
