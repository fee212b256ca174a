"""`nnrun generate`: sample a continuation from a trained sequence model (text on stdout,
music as a MIDI file in the run directory)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from experiments.errors import UserError


def generate(run_dir: Path, prime: Optional[str], length: int, temperature: float, top_k: int, seed: int,
             last: bool = False, out: Optional[Path] = None) -> int:
    from experiments.generate import fresh_path, generate as sample, load_sequence_model, write_midi

    model = load_sequence_model(run_dir, "last" if last else "best")
    result = sample(model, prime, length, temperature, top_k, seed)
    if model.kind == "text":
        if out is not None:
            _write_new(out, result.text)
            print(f"wrote {out}", file=sys.stderr)
        else:
            sys.stdout.write(result.text if result.text.endswith("\n") else result.text + "\n")
        return 0
    if out is not None and out.exists():
        raise UserError(f"{out} exists; nnrun never overwrites a file: give another --out or leave it out")
    if out is None:
        base = fresh_path(model.run_dir / "generated", f"seed{seed}-t{temperature:g}-k{top_k}", (".mid",))
        out = base.with_name(base.name + ".mid")  # not with_suffix: the stem holds dots (t0.8)
    path = out
    try:
        write_midi(result.prime + result.continuation, path)
    except FileExistsError:
        raise UserError(f"{path} exists; nnrun never overwrites a file: give another --out") from None
    print(result.text, flush=True)
    print(f"wrote {path} ({len(result.prime)} prime + {len(result.continuation)} generated steps)", file=sys.stderr)
    return 0


def _write_new(path: Path, text: str) -> None:
    try:
        with open(path, "x", encoding="utf-8") as f:
            f.write(text)
    except FileExistsError:
        raise UserError(f"{path} exists; nnrun never overwrites a file: give another --out") from None
