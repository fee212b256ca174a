"""The `nnrun` command line: a thin Typer layer over experiments/.

Heavy imports (jax, flax, hydra) happen inside the commands so that `nnrun --help`
answers instantly.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Train, evaluate, inspect and sweep classic neural networks in JAX.\n\n"
    "Examples: nnrun train conf=lenet5 optim.lr=0.01 | nnrun eval outputs/lenet5/<run> | nnrun show conf=lenet5",
)
OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
STATE = {"debug": False}


def _split_conf(args: List[str]) -> tuple[Optional[str], Optional[str], list[str]]:
    """Pull `conf=NAME` and `resume=DIR` out of the Hydra overrides."""
    conf = resume = None
    rest = []
    for a in args:
        if a.startswith("conf="):
            conf = a.split("=", 1)[1]
        elif a.startswith("resume="):
            resume = a.split("=", 1)[1]
        elif a.startswith("-"):
            from experiments.errors import UserError

            raise UserError(f"unknown option '{a}'; see `nnrun {sys.argv[1] if len(sys.argv) > 1 else ''} --help`")
        else:
            rest.append(a)
    return conf, resume, rest


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    cfg: bool = typer.Option(False, "--cfg", help="Print the resolved config and exit without training."),
):
    """Train an experiment: nnrun train conf=<name> [key=value ...] | nnrun train resume=<run_dir>

    Everything after conf= is a Hydra override (optim.lr=0.01, model=lstm, +x=1, ~y,
    hydra.run.dir=DIR)."""
    from cli import commands

    conf, resume, overrides = _split_conf(ctx.args)
    raise typer.Exit(commands.train(conf, overrides, resume=resume, print_cfg=cfg))


@app.command("eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="A run directory, e.g. outputs/lenet5/<date>_<time>-<id>"),
    last: bool = typer.Option(False, "--last", help="Use the last checkpoint instead of the best."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test, val or train."),
):
    """Evaluate a run's checkpoint; prints a table and writes eval.json into the run."""
    from cli import commands

    raise typer.Exit(commands.evaluate(run_dir, "last" if last else "best", split))


@app.command(context_settings=OVERRIDES)
def show(ctx: typer.Context):
    """Print the model of an experiment as a table: nnrun show conf=<name> [overrides]."""
    from cli import commands

    conf, _, overrides = _split_conf(ctx.args)
    raise typer.Exit(commands.show(conf, overrides))


@app.command(context_settings=OVERRIDES)
def sweep(
    ctx: typer.Context,
    jobs: int = typer.Option(1, "--jobs", "-j", help="Trials run in parallel on this machine (one process each)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List the trials that would run and exit."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Re-run only the unfinished trials of this sweep directory."),
    vectorize: Optional[bool] = typer.Option(
        None, "--vectorize/--no-vectorize",
        help="Train shape-compatible trials together as one vmapped program (default: the sweep's setting).",
    ),
    force_vectorize: bool = typer.Option(False, "--force-vectorize", help="Vectorize even where nnrun would decline."),
):
    """Run a hyperparameter sweep: nnrun sweep conf=<name> optim.lr=0.1,0.01 seed=0,1,2 [sweep=<name>]

    Hydra's sweep grammar: comma lists, range(), choice(), interval(), group choices
    (model=lstm,gru). Each trial gets its own run directory under the sweep directory."""
    from cli import sweep_cmd

    conf, _, overrides = _split_conf(ctx.args)
    raise typer.Exit(sweep_cmd.sweep(conf, overrides, jobs=jobs, dry_run=dry_run, resume=resume,
                                     vectorize=vectorize, force_vectorize=force_vectorize))


@app.command("list")
def list_():
    """List the experiments, models, datasets, optimizers, schedules and trainers."""
    from cli import commands

    raise typer.Exit(commands.list_all())


@app.callback()
def main(debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors.")):
    STATE["debug"] = STATE["debug"] or debug


def run() -> None:
    """Console-script entry: one-line errors, tracebacks only with --debug."""
    if "--debug" in sys.argv[2:]:  # accept --debug after the command too
        sys.argv.remove("--debug")
        STATE["debug"] = True
    try:
        app()
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001
        from cli.errors import report

        sys.exit(report(err, STATE["debug"]))


if __name__ == "__main__":
    run()
