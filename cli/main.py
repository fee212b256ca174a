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
STATE = {"debug": False, "plugins": []}
VALUE_OPTIONS = ("--plugin", "--config-dir")  # also accepted after the command, among the overrides


def _split_conf(args: List[str]) -> tuple[Optional[str], Optional[str], list[str]]:
    """Pull `conf=NAME`, `resume=DIR`, `--plugin X` and `--config-dir DIR` out of the Hydra overrides."""
    from experiments.errors import UserError

    conf = resume = None
    rest: list[str] = []
    plugins = list(STATE["plugins"])
    args = list(args)
    while args:
        a = args.pop(0)
        option, _, value = a.partition("=")
        if option in VALUE_OPTIONS:
            if not value:
                if not args or args[0].startswith("-"):
                    raise UserError(f"option {option} needs a value, e.g. {option} "
                                    f"{'my_models.py' if option == '--plugin' else './conf'}")
                value = args.pop(0)
            if option == "--plugin":
                plugins.append(value)
            else:
                use_config_dir(value)
        elif a.startswith("conf="):
            conf = value
        elif a.startswith("resume="):
            resume = value
        elif a.startswith("-"):
            raise UserError(f"unknown option '{a}'; see `nnrun {sys.argv[1] if len(sys.argv) > 1 else ''} --help`")
        else:
            rest.append(a)
    if plugins:
        rest = _with_plugins(conf, rest, plugins)
    return conf, resume, rest


def _with_plugins(conf: Optional[str], overrides: list[str], plugins: list[str]) -> list[str]:
    """--plugin X as a `plugins=[...]` override, added to the experiment's own list, so the
    run's config (and each sweep trial's) records it."""
    from experiments.hydra_bridge import plugin_specs, plugins_override
    from experiments.config import experiment_names
    from experiments.registry import resolve_plugin

    own = plugin_specs(conf, overrides)[0] if conf and conf in experiment_names() else []
    specs = list(dict.fromkeys(resolve_plugin(s) for s in [*own, *plugins]))
    return [*(o for o in overrides if o.lstrip("+~").split("=", 1)[0] != "plugins"), plugins_override(specs)]


def use_config_dir(path: str) -> None:
    """--config-dir DIR: searched before ./conf and nnrun's own (through $NNRUN_CONFIG_DIR, so
    that sweep trials, which are child processes, search it too)."""
    import os

    from experiments.errors import UserError

    d = Path(path).expanduser().resolve()
    if not d.is_dir():
        raise UserError(f"--config-dir {path}: no such directory; give a folder that holds <experiment>.yaml "
                        "and/or group folders (model/, data/, ...)")
    old = [p for p in os.environ.get("NNRUN_CONFIG_DIR", "").split(os.pathsep) if p and p != str(d)]
    os.environ["NNRUN_CONFIG_DIR"] = os.pathsep.join([str(d), *old])


@app.command(context_settings=OVERRIDES)
def train(
    ctx: typer.Context,
    cfg: bool = typer.Option(False, "--cfg", help="Print the resolved config and exit without training."),
):
    """Train an experiment: nnrun train conf=<name> [key=value ...] | nnrun train resume=<run_dir>

    Everything after conf= is a Hydra override (optim.lr=0.01, optim=sgd, model=mlp,
    trainer.epochs=3, hydra.run.dir=DIR; on conf=lstm_mnist, model.cell=gru); `nnrun list`
    names every choice. Your own models: --plugin FILE|MODULE, your own configs: --config-dir
    DIR or ./conf (README: Extending nnrun)."""
    from cli import commands

    conf, resume, overrides = _split_conf(ctx.args)
    raise typer.Exit(commands.train(conf, overrides, resume=resume, print_cfg=cfg))


@app.command("eval", context_settings=OVERRIDES)
def eval_(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A run directory, e.g. outputs/lenet5/<date>_<time>-<id>"),
    last: bool = typer.Option(False, "--last", help="Use the last checkpoint instead of the best."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: test, val or train."),
):
    """Evaluate a run's checkpoint; prints a table and writes eval-<checkpoint>-<split>.json into the run.
    Evaluation settings of the model may be overridden: nnrun eval RUN model.beam=5 (beam-search decoding)."""
    from cli import commands

    raise typer.Exit(commands.evaluate(run_dir, "last" if last else "best", split, list(ctx.args)))


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
    (optim=adam,sgd; on conf=lstm_mnist, model.cell=lstm,gru). Each trial gets its own run
    directory under the sweep directory."""
    from cli import sweep_cmd

    conf, _, overrides = _split_conf(ctx.args)
    raise typer.Exit(sweep_cmd.sweep(conf, overrides, jobs=jobs, dry_run=dry_run, resume=resume,
                                     vectorize=vectorize, force_vectorize=force_vectorize))


@app.command("list")
def list_():
    """List the experiments, models, datasets, optimizers, schedules and trainers."""
    from cli import commands

    raise typer.Exit(commands.list_all(STATE["plugins"]))


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A run of a sequence model, e.g. outputs/char_shakespeare/<run>"),
    prime: Optional[str] = typer.Option(None, "--prime", help="Text to start from (music: chords, e.g. 'C3,E4,G4 60,64,67')."),
    length: int = typer.Option(500, "--length", "-n", help="Tokens (characters, words or steps) to generate."),
    temperature: float = typer.Option(1.0, "--temperature", "-t", help="Below 1: safer choices; above 1: wilder."),
    top_k: int = typer.Option(0, "--top-k", "-k", help="Sample among the K most likely tokens only (0: all)."),
    seed: int = typer.Option(0, "--seed", help="The same seed gives the same sample."),
    last: bool = typer.Option(False, "--last", help="Use the last checkpoint instead of the best."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write to this new file (music: default generated/ in the run)."),
):
    """Sample from a trained language or music model: text on stdout, music as a MIDI file."""
    from cli import generate_cmd

    raise typer.Exit(generate_cmd.generate(run_dir, prime, length, temperature, top_k, seed, last, out))


@app.command()
def compose(
    run_dir: Path = typer.Argument(..., help="A run of a sequence model, e.g. outputs/char_shakespeare/<run>"),
    prime: Optional[str] = typer.Option(None, "--prime", help="Text (or chords) to start from."),
    top: int = typer.Option(10, "--top", help="How many proposals to show."),
    last: bool = typer.Option(False, "--last", help="Use the last checkpoint instead of the best."),
):
    """Write a text or a chorale together with a trained model: it proposes the 10 most likely next
    tokens, you pick (number or Enter), type your own, or undo (<); Ctrl-D saves under <run>/compose/."""
    from cli import compose_cmd

    raise typer.Exit(compose_cmd.compose(run_dir, prime, top, last))


@app.command()
def plots(
    run_dir: Path = typer.Argument(..., help="A run directory, e.g. outputs/cnn_mnist/<date>_<time>-<id>"),
    last: bool = typer.Option(False, "--last", help="Draw the last checkpoint instead of the best."),
):
    """Draw a run's pictures again into its plots/: learning curves and the model's figures
    (classifiers of images: filters, feature maps, confusion matrix, misclassified images)."""
    from cli import plots_cmd

    raise typer.Exit(plots_cmd.plots(run_dir, "last" if last else "best"))


from cli.demo_cmd import demo_app  # noqa: E402 - Typer only; the demos import jax when they run

app.add_typer(demo_app, name="demo", help="Demonstrations of the building blocks: nnrun demo kernels [--image PATH | --index N]")


@app.command()
def latents(
    run_dir: Path = typer.Argument(..., help="An autoencoder run directory, e.g. outputs/autoencoder_mnist/<run>"),
    split: str = typer.Option("test", "--split", help="Split to encode: test, val or train."),
    out: Optional[Path] = typer.Option(None, "--out", help="The .npy file to write (default: <run>/latents-<split>.npy)."),
    last: bool = typer.Option(False, "--last", help="Use the last checkpoint instead of the best."),
):
    """Export an autoencoder run's latent codes for a split to a .npy file (labels beside it)."""
    from cli import latents_cmd

    raise typer.Exit(latents_cmd.latents(run_dir, split, out, "last" if last else "best"))


@app.callback()
def main(
    debug: bool = typer.Option(False, "--debug", help="Show Python tracebacks on errors."),
    config_dir: Optional[Path] = typer.Option(
        None, "--config-dir", metavar="DIR", help="A folder of your own configs (<experiment>.yaml, model/, data/, ...), "
        "searched before ./conf and nnrun's own. Also after the command."),
    plugin: Optional[List[str]] = typer.Option(
        None, "--plugin", metavar="FILE|MODULE", help="A Python file or module that registers models, datasets, objectives, ... "
        "(repeatable; also after the command, or plugins=[...] in a config)."),
):
    STATE["debug"] = STATE["debug"] or debug
    STATE["plugins"] = list(plugin or [])
    if config_dir is not None:
        use_config_dir(str(config_dir))


def run() -> None:
    """Console-script entry: one-line errors, tracebacks only with --debug."""
    if "--debug" in sys.argv[2:]:  # accept --debug after the command too
        sys.argv.remove("--debug")
        STATE["debug"] = True
    import logging

    # a log line that cannot be written (run.log on a full disk, orbax logging its own failed
    # save) must not print "--- Logging error ---" tracebacks around the one-line error
    logging.raiseExceptions = STATE["debug"]
    try:
        app()
    except SystemExit:
        raise
    except BaseException as err:  # noqa: BLE001
        from cli.errors import report

        sys.exit(report(err, STATE["debug"]))


if __name__ == "__main__":
    run()
