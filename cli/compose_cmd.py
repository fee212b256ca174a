"""`nnrun compose`: interactive co-composition with a trained sequence model."""
from __future__ import annotations

from pathlib import Path
from typing import Optional


def compose(run_dir: Path, prime: Optional[str], top: int, last: bool = False) -> int:
    from experiments.compose import compose as loop
    from experiments.generate import load_sequence_model

    try:  # readline gives the prompt line editing and history where it exists
        import readline  # noqa: F401
    except ImportError:  # pragma: no cover - Windows
        pass
    model = load_sequence_model(run_dir, "last" if last else "best")
    loop(model, prime, top)
    return 0
