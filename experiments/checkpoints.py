"""Checkpoints with orbax: the latest K (for resume) and the best by validation metric.

Layout: <run>/checkpoints/last/<step>/ and <run>/checkpoints/best/<step>/. Saves are
synchronous: the states here are small, and a checkpoint that is guaranteed on disk
when save() returns is what SIGTERM handling and "keep the last good one" rely on.

A save that fails (a full disk, a kill) never replaces a good checkpoint: orbax writes
into <step>.orbax-checkpoint-tmp* and renames it when complete. The partial directory of
a failed save is removed at once (it holds the space the run needs), and any left by a
process that was killed is removed when the next Checkpointer opens the directory (that
process holds the run directory's lock, experiments/locks.py: no save is under way).
A full disk becomes one line (runs.DiskFullError): the device, the last good
checkpoint, and the resume command.
"""
from __future__ import annotations

import logging
import shutil
import sys
import threading
from pathlib import Path
from typing import Any, Optional

import orbax.checkpoint as ocp

from experiments.errors import UserError
from experiments.runs import disk_full_error, is_disk_full

TMP_MARK = ".orbax-checkpoint-tmp"  # orbax's name for a checkpoint being written
log = logging.getLogger("nnrun")


class Checkpointer:
    def __init__(self, checkpoint_dir: Path, keep: int = 3):
        self.dir = Path(checkpoint_dir).resolve()
        self._keep = keep
        self._managers: dict[str, ocp.CheckpointManager] = {}
        for which in ("last", "best"):  # left by a process killed while saving (the run lock is ours)
            self.remove_partial(which)

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
        _quiet_closed_loop_noise()  # installed before: a failed save's stragglers print right away
        try:
            manager.save(step, args=ocp.args.StandardSave(state), force=True)
            manager.wait_until_finished()
        except BaseException as err:
            removed = self.remove_partial(which)
            if is_disk_full(err):
                log.error("checkpoint %s/%s not written (no space left); removed the partial %s", which, step,
                          ", ".join(p.name for p in removed) or "nothing")
                raise disk_full_error(self.dir / which / str(step), run_dir=self.dir.parent) from err
            raise

    def remove_partial(self, which: str) -> list[Path]:
        """Delete the unfinished checkpoint directories (<step>.orbax-checkpoint-tmp*) of
        `which`; they are never read back. Returns what was removed."""
        root = self.dir / which
        removed = []
        if root.is_dir():
            for path in root.iterdir():
                if TMP_MARK in path.name:
                    shutil.rmtree(path, ignore_errors=True)
                    removed.append(path)
        return removed

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
        self._check_shapes(which, step, target)  # before any read: a failed restore leaves reads pending
        try:
            restored = self._manager(which).restore(step, args=ocp.args.StandardRestore(target))
        except ValueError as err:  # orbax: tree structure or array shapes differ from the model's
            first = (str(err).strip().splitlines() or [""])[0].split(". ")[0].rstrip(":.")
            raise UserError(
                f"checkpoint {self.dir / which / str(step)} does not fit the model built from the run's "
                f"config.yaml ({first}); was it written by another version of the model code? Train again"
            ) from err
        return restored, step

    def _check_shapes(self, which: str, step: int, target: Any) -> None:
        """Compare the saved arrays' shapes with the target's from the checkpoint's metadata.
        A restore into the wrong shapes fails only after orbax has started reading every
        array; the reads it abandons are reported later by the garbage collector as
        'Exception ignored in ... _read_array_index_and_device_put' (pytest: one
        PytestUnraisableExceptionWarning per array)."""
        import jax

        absl = logging.getLogger("absl")  # orbax warns that the item folder has no step metadata: it needs none
        level = absl.level
        absl.setLevel(logging.ERROR)
        try:
            with ocp.StandardCheckpointer() as reader:
                saved = reader.metadata(self.dir / which / str(step) / "default")
        except Exception:  # noqa: BLE001 - no metadata to compare: orbax's restore decides
            return
        finally:
            absl.setLevel(level)
        saved = getattr(saved, "item_metadata", saved)
        shapes = {_path(p): tuple(getattr(leaf, "shape", ()) or ())
                  for p, leaf in jax.tree_util.tree_leaves_with_path(saved)}
        for path, leaf in jax.tree_util.tree_leaves_with_path(target):
            key = _path(path)
            want = tuple(getattr(leaf, "shape", ()))
            if key in shapes and shapes[key] != want:
                raise UserError(
                    f"checkpoint {self.dir / which / str(step)} does not fit the model built from the run's "
                    f"config.yaml ({key}: saved {shapes[key]}, the model has {want}); was it written by another "
                    "version of the model code? Train again")

    def close(self) -> None:
        for manager in self._managers.values():
            manager.close()
        self._managers.clear()


_quiet_lock = threading.Lock()


def _closed_loop_filter(previous: Any) -> Any:
    """An unraisable hook that drops 'RuntimeError: Event loop is closed' and passes
    everything else to `previous`."""

    def hook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
            log.debug("ignored after a failed checkpoint save: %s", exc)
            return
        previous(unraisable)

    hook.nnrun_closed_loop_filter = True  # type: ignore[attr-defined]
    return hook


def _quiet_closed_loop_noise() -> None:
    """After a failed orbax save, the save's other pending writes complete on an event loop
    that has already closed, and each prints a 'RuntimeError: Event loop is closed'
    traceback through sys.unraisablehook: noise after the real error, which the user gets
    in one line. Drop exactly those (installed once, before the first save)."""
    with _quiet_lock:
        if not getattr(sys.unraisablehook, "nnrun_closed_loop_filter", False):
            sys.unraisablehook = _closed_loop_filter(sys.unraisablehook)


def _path(path: tuple) -> str:
    """A tree path as names joined by '.', the same whether a level is a dataclass
    attribute (the state as built) or a dict key (the state as orbax saved it)."""
    names = [getattr(k, "name", getattr(k, "key", getattr(k, "idx", k))) for k in path]
    return ".".join(str(n) for n in names)
