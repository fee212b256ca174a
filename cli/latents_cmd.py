"""`nnrun latents RUN_DIR --split test --out FILE.npy`: a trained autoencoder's codes for
every example of a split, as a (N, code) float32 .npy file (labels, where the split has
them, beside it as FILE.labels.npy)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from experiments.errors import UserError


def latents(run_dir: Path, split: str, out: Optional[Path], which: str) -> int:
    import jax
    import numpy as np

    from experiments.checkpoints import Checkpointer
    from experiments.data import load_dataset
    from experiments.generative_figures import encode_split
    from experiments.locks import hold
    from experiments.runner import load_experiment
    from experiments.training.driver import build_steps, initial_state
    from rich.console import Console

    run_dir = run_dir.resolve()
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a directory under outputs/")
    exp = load_experiment(run_dir)
    out = Path(out) if out is not None else run_dir / f"latents-{split}.npy"
    if out.suffix != ".npy":
        raise UserError(f"--out {out}: the file must end in .npy")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: directory {out.parent} does not exist; create it first")
    data = load_dataset(exp.data)
    chosen = data.split(split)
    steps = build_steps(exp, data)
    if not hasattr(steps.model, "encode") or not hasattr(steps.model, "code"):
        raise UserError(f"{run_dir} trained model '{exp.model.name}', which has no latent code; "
                        "`nnrun latents` takes autoencoder runs (model=autoencoder)")
    with hold(run_dir):
        if not (run_dir / "checkpoints").is_dir():
            raise UserError(f"{run_dir} has no checkpoints/ (the run saved none); train it again or resume it")
        with Checkpointer(run_dir / "checkpoints") as ckpt:
            if which == "best" and ckpt.latest_step("best") is None:
                which = "last"
            state, step = ckpt.restore(which, initial_state(steps, jax.random.key(exp.seed), data))
    codes = encode_split(steps, state.inner, chosen.x).astype(np.float32)
    _save_atomic(out, codes)
    labels = chosen.y
    if labels is not None:
        _save_atomic(out.with_suffix(".labels.npy"), np.asarray(labels))
    Console().print(f"wrote {out}: {codes.shape[0]} codes of size {codes.shape[1]} ({split} split, {which} "
                    f"checkpoint, step {step})" + (f"; labels in {out.with_suffix('.labels.npy')}" if labels is not None
                                                   else ""), markup=False, highlight=False, soft_wrap=True)
    return 0


def _save_atomic(path: Path, array) -> None:
    """Written beside, then renamed: a failure never leaves a half-written file in place."""
    import os

    import numpy as np

    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)
