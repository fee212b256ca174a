"""`nnrun plots <run_dir>`: draw a finished (or interrupted) run's pictures again, from its
metrics and a checkpoint: the learning curves, and the objective's figures (for image
classifiers: first-layer filters, feature maps, confusion matrix, misclassified images)."""
from __future__ import annotations

from pathlib import Path


def plots(run_dir: Path, which: str) -> int:
    import jax

    from cli.commands import console
    from experiments.checkpoints import Checkpointer
    from experiments.data import load_dataset
    from experiments.errors import UserError
    from experiments.figures import draw_figures
    from experiments.locks import hold
    from experiments.plots import plot_learning_curves
    from experiments.runner import load_experiment
    from experiments.runs import Run
    from experiments.training.driver import build_steps, initial_state

    run_dir = run_dir.resolve()
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a directory under outputs/")
    exp = load_experiment(run_dir)
    with hold(run_dir):  # not while a run writes in it
        paths = list(plot_learning_curves(run_dir)) if (run_dir / "metrics.jsonl").is_file() else []
        if (run_dir / "checkpoints").is_dir() and exp.trainer.name == "gradient":
            data = load_dataset(exp.data)
            steps = build_steps(exp, data)
            with Checkpointer(run_dir / "checkpoints") as ckpt:
                state, step = ckpt.restore(which, initial_state(steps, jax.random.key(exp.seed), data))
            paths += draw_figures(exp, steps, state.inner, data, Run(run_dir).plots_dir)
    if not paths:
        raise UserError(f"{run_dir} has nothing to draw (no metrics.jsonl, no checkpoint of a gradient-trained model)")
    for p in paths:
        console.print(f"wrote {p}", markup=False, highlight=False, soft_wrap=True)
    return 0
