"""Checkpoints with orbax: the latest K (for resume) and the best by validation metric.

Layout: <run>/checkpoints/last/<step>/ and <run>/checkpoints/best/<step>/. Saves are
synchronous: the states here are small, and a checkpoint that is guaranteed on disk
when save() returns is what SIGTERM handling and "keep the last good one" rely on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import orbax.checkpoint as ocp

from experiments.errors import UserError


class Checkpointer:
    def __init__(self, checkpoint_dir: Path, keep: int = 3):
        self.dir = Path(checkpoint_dir).resolve()
        self._keep = keep
        self._managers: dict[str, ocp.CheckpointManager] = {}

    def _manager(self, which: str, create: bool = True) -> ocp.CheckpointManager:
        if which not in self._managers:
            options = ocp.CheckpointManagerOptions(
                max_to_keep=self._keep if which == "last" else 1,
                create=create,
                enable_async_checkpointing=False,
            )
            self._managers[which] = ocp.CheckpointManager(self.dir / which, options=options)
        return self._managers[which]

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()  # on errors too (a non-finite loss, a signal): no manager is left open

    def save(self, which: str, step: int, state: Any) -> None:
        manager = self._manager(which)
        if step in manager.all_steps():
            return  # already saved at this step (e.g. an interrupt right after a periodic save)
        manager.save(step, args=ocp.args.StandardSave(state), force=True)
        manager.wait_until_finished()

    def latest_step(self, which: str = "last") -> Optional[int]:
        if not (self.dir / which).is_dir():
            return None
        return self._manager(which, create=False).latest_step()

    def restore(self, which: str, target: Any) -> tuple[Any, int]:
        """Restore into the structure (and dtypes/shapes) of `target`."""
        step = self.latest_step(which)
        if step is None:
            other = "; `nnrun eval --last` uses the last checkpoint instead" if which == "best" else ""
            raise UserError(
                f"no '{which}' checkpoint in {self.dir}; the run saved none (did it fail or stop before its "
                f"first epoch ended?). Train again or resume it{other}"
            )
        try:
            restored = self._manager(which).restore(step, args=ocp.args.StandardRestore(target))
        except ValueError as err:  # orbax: tree structure or array shapes differ from the model's
            first = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(":.")
            raise UserError(
                f"checkpoint {self.dir / which / str(step)} does not fit the model built from the run's "
                f"config.yaml ({first}); was it written by another version of the model code? Train again"
            ) from err
        return restored, step

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()
