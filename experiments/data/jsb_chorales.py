"""JSB Chorales (Boulanger-Lewandowski et al. 2012): 382 four-part Bach chorales quantised
to quarter notes, in the benchmark's train / valid / test split (229 / 76 / 77).

Each chorale becomes an 88-key piano roll (MIDI 21-108, key k = pitch 21 + k) with one row
per quarter note. An example is a whole chorale: inputs are its steps 0..T-2, targets the
steps 1..T-1 (next-step prediction), padded to the longest chorale with a `mask` of the
real steps, so a padded step counts nothing. Scored per step by the `piano_roll`
objective.

Files (`data.path`): the JSON copy (plain lists of ints; shipped with nnrun), or the
benchmark's original pickle. The pickle is never read with Python's default unpickler
(which runs whatever code a file names): `SafeUnpickler` builds only lists, tuples, dicts,
ints and strings, and decodes the numpy int64 scalars the original file holds with its own
byte decoder, without importing numpy's constructors; anything else is refused.
"""
from __future__ import annotations

import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from experiments.data import DataConfig, Dataset, Split, register_dataset
from experiments.errors import UserError

PACKAGED = Path(__file__).resolve().parent / "corpora" / "jsb-chorales-quarter.json"
LOWEST, KEYS = 21, 88  # piano keys A0 (MIDI 21) .. C8 (MIDI 108)
SPLITS = {"train": "train", "val": "valid", "test": "test"}


@dataclass
class JSBChoralesConfig(DataConfig):
    name: str = "jsb_chorales"
    path: Optional[str] = None  # a .json (lists of ints) or the original .pickle; null = the shipped JSON
    val_size: int = 1  # 0: no validation split (the benchmark's 'valid' chorales are not used)


# ---------------------------------------------------------------------------- safe unpickling


class _Int64Dtype:
    """Stands in for numpy.dtype('int64') while unpickling: accepts only that dtype."""

    def __init__(self, name: Any, align: Any = False, copy: Any = True):
        if name not in ("i8", "<i8", "int64"):
            raise pickle.UnpicklingError(f"dtype {name!r} is not allowed (only int64)")

    def __setstate__(self, state: Any) -> None:
        if not (isinstance(state, tuple) and len(state) > 1 and state[1] in ("<", "|", "=")):
            raise pickle.UnpicklingError("only little-endian int64 scalars are allowed")


def _int64_scalar(dtype: Any, raw: Any = None) -> int:
    """numpy.core.multiarray.scalar(int64 dtype, 8 bytes) -> a plain int, decoded here."""
    if not isinstance(dtype, _Int64Dtype) or not isinstance(raw, (bytes, str)):
        raise pickle.UnpicklingError("only int64 scalars are allowed")
    data = raw.encode("latin1") if isinstance(raw, str) else raw  # Python 2 pickles store bytes as str
    if len(data) != 8:
        raise pickle.UnpicklingError("an int64 scalar must have 8 bytes")
    return int.from_bytes(data, "little", signed=True)


class SafeUnpickler(pickle.Unpickler):
    """Plain containers and numbers only; the two numpy names of an int64 scalar map to
    the decoders above. Every other global (os.system, builtins.eval, ...) is refused."""

    ALLOWED = {("numpy", "dtype"): _Int64Dtype, ("numpy.core.multiarray", "scalar"): _int64_scalar,
               ("numpy._core.multiarray", "scalar"): _int64_scalar}

    def find_class(self, module: str, name: str) -> Any:
        allowed = self.ALLOWED.get((module, name))
        if allowed is None:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return allowed


def safe_unpickle(data: bytes) -> Any:
    return SafeUnpickler(io.BytesIO(data), encoding="latin1").load()


# ---------------------------------------------------------------------------- reading


def read_chorales(path: Optional[str]) -> dict[str, list]:
    """{'train'|'valid'|'test': [chorale: [step: [pitch, ...]]]} from the JSON or the pickle."""
    file = Path(path).expanduser() if path else PACKAGED
    where = f"data.path={path}" if path else f"the packaged {file.name}"
    if not file.is_file():
        raise UserError(f"{where}: no such file; give the JSB Chorales JSON (or the original pickle)")
    raw = file.read_bytes()
    try:
        if file.suffix in (".pickle", ".pkl"):
            chorales = safe_unpickle(raw)
        else:
            chorales = json.loads(raw)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        kind = "pickle" if file.suffix in (".pickle", ".pkl") else "JSON"
        raise UserError(f"{where} is not a JSB Chorales {kind} file ({str(err).splitlines()[0][:120]}); "
                        "give the JSON copy (lists of MIDI pitches per step)") from None
    if not isinstance(chorales, dict) or any(k not in chorales for k in SPLITS.values()):
        raise UserError(f"{where} does not hold the train, valid and test chorales; give the JSB Chorales JSON")
    return chorales


def piano_roll(chorale: list, length: int) -> np.ndarray:
    """(length, 88) 0/1 rows, one per step; rows past the chorale stay 0."""
    roll = np.zeros((length, KEYS), np.float32)
    for t, step in enumerate(chorale[:length]):
        for pitch in step:
            k = int(pitch) - LOWEST
            if not 0 <= k < KEYS:
                raise UserError(f"pitch {pitch} is outside the 88 piano keys (MIDI 21-108)")
            roll[t, k] = 1.0
    return roll


def chorale_split(chorales: list, length: int) -> Split:
    """Inputs = steps 0..T-2, targets = steps 1..T-1, mask = the real target steps."""
    rolls = np.stack([piano_roll(c, length + 1) for c in chorales])
    mask = np.stack([np.arange(length) < len(c) - 1 for c in chorales]).astype(np.float32)
    return Split(rolls[:, :-1], rolls[:, 1:], mask=mask)


@register_dataset("jsb_chorales", schema=JSBChoralesConfig)
def load(cfg: JSBChoralesConfig) -> Dataset:
    """JSB Chorales: 88-key piano rolls at quarter notes, each chorale -> its next steps (masked)"""
    chorales = read_chorales(cfg.path)
    length = max(len(c) for part in chorales.values() for c in part) - 1
    parts = {name: chorales[key][: (cfg.train_subset if name == "train" else cfg.test_subset) or None]
             for name, key in SPLITS.items()}
    return Dataset(cfg.name, chorale_split(parts["train"], length),
                   chorale_split(parts["val"], length) if cfg.val_size else None,
                   chorale_split(parts["test"], length), num_classes=None,
                   meta={"lowest_pitch": LOWEST, "keys": KEYS, "steps": length})
