"""What each command does, as plain functions returning an exit code (testable without Typer)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from rich.console import Console
from rich.table import Table

from experiments.errors import UserError

console = Console()
err_console = Console(stderr=True)


def train(conf: Optional[str], overrides: list[str], resume: Optional[str] = None, print_cfg: bool = False) -> int:
    from omegaconf import OmegaConf

    from experiments import hydra_bridge as hb
    from experiments.config import validate

    if resume:
        conf, overrides = _resume_overrides(Path(resume), conf, overrides)
    conf = hb.check_experiment(conf)
    cfg, overrides = hb.compose(conf, overrides)
    validate(hb.task_config(cfg))  # schema errors surface here, before Hydra creates anything
    if print_cfg:
        console.print(OmegaConf.to_yaml(hb.task_config(cfg), resolve=True), end="", markup=False, highlight=False)
        return 0
    run_dir = hb.resolved_run_dir(cfg)
    if resume and (done := _already_complete(run_dir, hb.task_config(cfg))):
        console.print(done, markup=False, highlight=False, soft_wrap=True)
        return 0
    if not resume:
        _refuse_existing(run_dir)
    outcome: dict = {}

    def task(job_cfg) -> None:
        from hydra.core.hydra_config import HydraConfig

        from experiments.runner import run_experiment

        try:
            outcome["summary"] = run_experiment(hb.task_config(job_cfg), Path(HydraConfig.get().runtime.output_dir), conf)
        except BaseException as err:  # noqa: BLE001 - reported by the CLI after Hydra returns
            outcome["error"] = err

    from experiments.locks import hold

    with hold(run_dir):  # one writer per run directory, from before Hydra writes .hydra/ into it
        if not resume:
            _refuse_existing(run_dir)  # again: another process may have started it since
        hb.launch(conf, [*overrides, f"hydra.run.dir={hb.quote(str(run_dir))}"], task)
    if "error" in outcome:
        raise outcome["error"]
    return _print_run_summary(outcome["summary"])


def _refuse_existing(run_dir: Path) -> None:
    from experiments.locks import only_lock_files

    if run_dir.exists() and not only_lock_files(run_dir):
        raise UserError(
            f"run directory {run_dir} already exists and is not empty; nnrun never overwrites a run. "
            f"Choose another hydra.run.dir, or continue it with `nnrun train resume={run_dir}`"
        )


def _already_complete(run_dir: Path, task_cfg) -> Optional[str]:
    """For `train resume=` of a completed run: what to tell the user, or None when the new
    config trains further (a larger trainer.epochs or trainer.max_steps than it ran)."""
    from experiments.runs import SUMMARY, read_json

    summary = read_json(run_dir / SUMMARY)
    if summary.get("status") != "completed":
        return None
    trainer = task_cfg.get("trainer") or {}
    epochs, max_steps = trainer.get("epochs"), trainer.get("max_steps")
    per_epoch, done = summary.get("steps_per_epoch"), summary.get("steps_done")
    if isinstance(epochs, int) and isinstance(per_epoch, int) and isinstance(done, int):
        planned = epochs * per_epoch if max_steps is None else min(epochs * per_epoch, int(max_steps))
        if planned > done:
            return None
    epochs_done = summary.get("epochs_done")
    ran = f"{epochs_done:g} epochs, {done} steps" if isinstance(epochs_done, (int, float)) else f"{done} steps"
    test = summary.get("test") or {}
    primary = next(iter(summary.get("metrics") or {}), None)  # the objective's first declared metric
    result = f"; test {primary} {test[primary]:.4g}" if primary and isinstance(test.get(primary), float) else ""
    more = (f" To train it further, add trainer.epochs=<more than {epochs}> (it continues from its last checkpoint; "
            "the lr schedule is recomputed for the new number of epochs)." if isinstance(epochs, int) else "")
    return f"run {run_dir} is already complete ({ran}{result}); nothing to do, nothing was written.{more}"


def _resume_overrides(run_dir: Path, conf: Optional[str], extra: list[str]) -> tuple[str, list[str]]:
    """The experiment name and overrides a run was started with, plus resume= and new ones."""
    import yaml

    from experiments.runs import SUMMARY, read_json

    run_dir = run_dir.resolve()
    summary_path, overrides_path = run_dir / SUMMARY, run_dir / ".hydra" / "overrides.yaml"
    if not summary_path.is_file() or not overrides_path.is_file():
        raise UserError(f"cannot resume {run_dir}: not an nnrun run directory (no summary.json or .hydra/overrides.yaml)")
    summary = read_json(summary_path)
    name = summary.get("experiment")
    if conf and conf != name:
        raise UserError(f"cannot resume {run_dir} as conf={conf}: it is a run of '{name}'; drop conf=")
    previous = [o for o in (yaml.safe_load(overrides_path.read_text()) or []) if not o.startswith("resume=")]
    from experiments.hydra_bridge import quote

    return name, [*previous, *extra, f"resume={quote(str(run_dir))}", f"hydra.run.dir={quote(str(run_dir))}"]


def _print_run_summary(summary: dict) -> int:
    table = Table(title=f"{summary['experiment']}: {summary['status']}", show_header=False)
    table.add_column(style="bold", overflow="fold")
    table.add_column(overflow="fold")
    for key, value in _summary_rows(summary):
        table.add_row(key, value)
    console.print(table)
    # whole, on its own line, never folded or cut: the one thing a user copies next
    console.print(f"run dir: {summary['run_dir']}", markup=False, highlight=False, soft_wrap=True)
    return 0 if summary["status"] == "completed" else 130


def _summary_rows(summary: dict) -> list[tuple[str, str]]:
    rows = []
    source = summary.get("test_from") or {}
    labels = {"test": f"test ({source['checkpoint']} ckpt, step {source['step']})" if source else "test",
              "test_last": f"test (last, step {summary.get('steps_done', '-')})", "best": "val (best)",
              "final": "final"}
    sections = ["test", "best"]
    if summary.get("test_last") is not None and summary.get("test_last") != summary.get("test"):
        sections.insert(1, "test_last")
    for section in sections:
        value = summary.get(section)
        if isinstance(value, dict):
            for k, v in _flatten(value).items():
                if section == "best" and k in ("epoch", "step"):
                    continue
                rows.append((f"{labels[section]} {k}", _fmt(v)))
    if isinstance(summary.get("best"), dict) and "step" in summary["best"]:
        rows.append(("best at", f"epoch {_fmt(summary['best'].get('epoch'))}, step {summary['best']['step']}"))
    rows += [("steps", str(summary.get("steps_done", "-"))), ("epochs", _fmt(summary.get("epochs_done", "-"))),
             ("wall time", f"{summary.get('wall_time_s', 0):.1f} s")]
    if isinstance(summary.get("examples_per_s"), (int, float)):
        rows.append(("throughput", f"{summary['examples_per_s']:,.0f} examples/s (steady state)"))
    return rows


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        elif v is not None:
            out[f"{prefix}{k}"] = v
    return out


def _fmt(v, digits: int = 4) -> str:
    """Floats to `digits` significant digits (0.9916, 0.02712, 1.234e-05), integers whole."""
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        return f"{v:.{digits}g}"
    return str(v)


def evaluate(run_dir: Path, which: str, split: str, overrides: Optional[list[str]] = None) -> int:
    from experiments.config import validate
    from experiments.runner import load_run_config
    from experiments.runs import write_json_atomic
    from experiments.training import evaluate_experiment

    run_dir = run_dir.resolve()
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a directory under outputs/")
    cfg = load_run_config(run_dir)  # first: a directory that is no run at all gets that message
    exp = validate(eval_overrides(cfg, overrides or []))
    from experiments.locks import hold

    with hold(run_dir):  # not while a run (or another eval) writes in it
        if not (run_dir / "checkpoints").is_dir():
            raise UserError(f"{run_dir} has no checkpoints/ (the run saved none); train it again or resume it")
        metrics = evaluate_experiment(exp, run_dir, split=split, which=which)
        path = run_dir / eval_file(metrics.get("checkpoint", which), metrics.get("split", split), overrides or [])
        if overrides:
            metrics = {**metrics, "overrides": list(overrides)}
        write_json_atomic(path, metrics)
        write_json_atomic(run_dir / "eval.json", metrics)  # the latest eval, whichever it was
    step = f" (step {metrics['step']})" if "step" in metrics else ""
    console.print(f"eval {run_dir}: {metrics.get('split', split)} split, {metrics.get('checkpoint', which)} "
                  f"checkpoint{step}", markup=False, highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right", overflow="fold")
    for k, v in _flatten(metrics).items():
        if k not in ("split", "checkpoint", "step"):
            table.add_row(k, _fmt(v))
    console.print(table)
    console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    return 0


def eval_file(which: str, split: str, overrides: Optional[list[str]] = None) -> str:
    """One file per (checkpoint, split[, overrides]), so that evaluations never overwrite each other."""
    suffix = "".join(f"-{o}" for o in overrides or [])
    return f"eval-{which}-{split}{suffix}.json"


EVAL_OVERRIDABLE = ("model.", "trainer.eval_batch_size")


def eval_overrides(cfg: Any, overrides: list[str]) -> Any:
    """The run's config with evaluation-time settings changed (a decoder's `model.beam`): only
    keys of the model or the evaluation batch size that the run's config already has."""
    from omegaconf import OmegaConf

    for item in overrides:
        key, eq, _ = item.partition("=")
        if not eq or not key.startswith(EVAL_OVERRIDABLE) or "/" in item:
            raise UserError(f"nnrun eval takes key=value settings of the model or trainer.eval_batch_size only "
                            f"(e.g. model.beam=5); got '{item}'")
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise UserError(f"'{key}' is not a setting of this run's config; check the name with "
                            f"nnrun train conf=<experiment> --cfg")
    return OmegaConf.merge(cfg, OmegaConf.from_dotlist(overrides)) if overrides else cfg


def show(conf: Optional[str], overrides: list[str]) -> int:
    from experiments import hydra_bridge as hb
    from experiments.config import validate
    from experiments.show import model_table

    conf = hb.check_experiment(conf)
    exp = validate(hb.task_config(hb.compose(conf, overrides)[0]))
    columns, rows, totals, notes = model_table(exp)
    title = f"{conf}: model '{exp.model.name}' on '{exp.data.name}'"
    keep = list(range(len(columns)))

    def build() -> Table:
        table = Table(title=title)
        for i in keep:
            c = columns[i]
            table.add_column(c, justify="right" if c in ("Params", "MACs", "FLOPs") else "left", no_wrap=True)
        for row in rows:
            table.add_row(*(row[i] for i in keep))
        table.add_section()
        table.add_row(*(totals[i] for i in keep))
        return table

    table = build()
    dropped = []
    for name in SHOW_DROP_ORDER:  # too narrow a terminal: drop what repeats or matters least, never cut values
        if natural_width(table) <= console.width or name not in columns:
            continue
        keep.remove(columns.index(name))
        dropped.append(name)
        table = build()
    console.print(table)
    if dropped:
        # wrapped at words (no soft_wrap): with the MACs column the list may pass 80 columns
        console.print(f"(left out to fit {console.width} columns: {', '.join(dropped)}; a wider terminal shows them)",
                      markup=False, highlight=False)
    for note in notes:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    return 0


def natural_width(renderable) -> int:
    """Columns `renderable` takes when nothing is folded or cut."""
    return console.measure(renderable, options=console.options.update_width(10_000)).maximum


SHOW_DROP_ORDER = ("Maps/Units", "Stride", "Kernel", "Activation", "Type")  # low value first


def list_all(plugins: Optional[list[str]] = None) -> int:
    from rich.markup import escape

    from experiments.config import experiment_file, experiment_names
    from experiments.registry import load_plugins

    load_plugins(plugins or [])  # installed nnrun.plugins entry points, and --plugin files or modules
    from experiments.data import DATASETS
    from experiments.models import MODELS
    from experiments.objectives import OBJECTIVES
    from experiments.optim import OPTIMIZERS, SCHEDULES
    from experiments.training import TRAINERS

    table = Table(title="nnrun")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("description", overflow="fold", ratio=1)  # folds onto more lines, never cut
    for name in experiment_names():
        table.add_row("experiment", name, _header_comment(experiment_file(name)))
    for name, entry in MODELS.items():
        table.add_row("model", name, escape(f"[{entry.trainer}] {entry.description}"))  # [..] is rich markup
    for kind, registry in (("dataset", DATASETS), ("objective", OBJECTIVES), ("optimizer", OPTIMIZERS),
                           ("schedule", SCHEDULES), ("trainer", TRAINERS)):
        for name, entry in registry.items():
            table.add_row(kind, name, entry.description.splitlines()[0] if entry.description else "")
    console.print(table)
    return 0


def _header_comment(path: Path) -> str:
    """The first sentence of an experiment's header comment (after its command line), whole:
    it may run over several comment lines."""
    import re

    lines = []
    for ln in path.read_text().splitlines():
        if not ln.startswith("#"):
            break
        text = ln[1:].strip()
        if text.startswith("nnrun ") and not lines:
            continue
        if text.lower().startswith(("expected:", "measured:")):
            break
        lines.append(text)
    body = " ".join(lines)
    end = re.search(r"(?<! al)(?<!e\.g)(?<!i\.e)\.(\s|$)", body)  # not after "et al." or "e.g."
    return body[: end.start() + 1] if end else body
