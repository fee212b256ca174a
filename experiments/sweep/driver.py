"""What `nnrun sweep` does: describe a sweep, check every trial, run the trials, report.

Flow: the spec (experiments/sweep/spec.py) -> trials (the grid, random draws, or Optuna
asked as slots free up) -> every trial's config composed and validated up front -> the
sweep directory with sweep.json -> trials run (vectorized groups, a Hydra launcher, or
the local process pool) -> tables, aggregate.csv, plots, exit code.
`--resume DIR` reloads sweep.json and runs only what did not complete.

Not for the mechanics of any one step (the other modules of experiments/sweep/), nor for
the terminal: everything shown goes through `show`, which the CLI points at its console.
"""
from __future__ import annotations

import shlex
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Optional

from experiments import locks
from experiments.errors import UserError
from experiments.runs import SUMMARY
from experiments.sweep import local, results, search, spec as spec_mod
from experiments.sweep.results import LOGS, SWEEP_JSON, SweepState, outcome
from experiments.sweep.spec import SweepSpec, Trial

Todo = deque  # of (Trial, resumed: bool)


def _print(renderable) -> None:
    from rich import print as rich_print

    rich_print(renderable)


show: Callable[[Any], None] = _print  # where messages and tables go; `cli/sweep_cmd.py` sets it


def say(message: str) -> None:
    from rich.text import Text

    show(Text(message))


def sweep(conf: Optional[str], overrides: list[str], jobs: int = 1, dry_run: bool = False,
          resume: Optional[Path] = None, vectorize: Optional[bool] = None, force_vectorize: bool = False) -> int:
    if jobs < 1:
        raise UserError(f"bad value for --jobs: {jobs}; it must be at least 1")
    if resume is not None and not dry_run and (Path(resume) / SWEEP_JSON).is_file() and not locks.holds(Path(resume)):
        with locks.hold(Path(resume), "sweep"):  # before sweep.json is read: a second --resume fails at once
            return sweep(conf, overrides, jobs, dry_run, resume, vectorize, force_vectorize)
    state = _resumed(Path(resume), conf, overrides) if resume is not None else _created(conf, overrides, dry_run)
    if state.spec.launcher:  # fails before anything is written if the launcher cannot start here
        _launcher()
        from experiments.sweep.launchers import check_launcher

        check_launcher(state.spec.conf, state.spec.launcher)
    if dry_run:
        return _dry_run(state, _plan(state, allow_resume=not state.spec.launcher, dry_run=True))
    with locks.hold(state.dir, "sweep"), local.SweepLock(state.dir):
        if resume is None and not locks.only_lock_files(state.dir):  # another sweep got here after _created looked
            raise UserError(f"sweep directory {state.dir} was just started by another process; choose another "
                            "hydra.sweep.dir")
        todo = _plan(state, allow_resume=not state.spec.launcher, dry_run=False)
        state.meta["status"] = "running"
        state.save()
        say(f"sweep {state.spec.conf}: {state.spec.search} search, {_size(state)}, {jobs} at a time -> {state.dir}")
        interrupted = _run(state, todo, jobs, state.spec.vectorize if vectorize is None else vectorize, force_vectorize)
        return _report(state, interrupted)


# ---------------------------------------------------------------------------- creating and resuming


def _created(conf: Optional[str], overrides: list[str], dry_run: bool) -> SweepState:
    from experiments import hydra_bridge as hb

    conf = hb.check_experiment(conf)
    spec = spec_mod.build(conf, overrides)
    if spec.launcher and spec.search == "optuna":
        raise UserError("hydra/launcher= runs a known list of trials: use it with grid or random search, not optuna")
    trials = _initial_trials(spec)
    checked = trials or [spec_mod.make_trial(spec, i, 1, v) for i, v in enumerate(search.corner_values(spec))]
    sweep_dir, child_overrides = _validate(spec, checked)
    if not dry_run and sweep_dir.exists() and any(sweep_dir.iterdir()):
        raise UserError(f"sweep directory {sweep_dir} already exists and is not empty; continue it with "
                        f"`nnrun sweep --resume {sweep_dir}` or choose another hydra.sweep.dir")
    return SweepState.new(sweep_dir, spec, trials, child_overrides)


def _initial_trials(spec: SweepSpec) -> list[Trial]:
    if spec.search == "grid":
        return spec_mod.grid(spec)
    if spec.search == "random":
        return search.random_trials(spec, 0, spec.budget or 0)
    return []  # optuna: asked one at a time


def _validate(spec: SweepSpec, trials: list[Trial]) -> tuple[Path, list[str]]:
    """Compose and validate every trial's config; return the sweep directory and the
    overrides each child gets besides its own (no progress bars in log files)."""
    from experiments import hydra_bridge as hb
    from experiments.config import validate

    sweep_dir, extra = None, []
    if len(trials) > 20:
        say(f"checking the configs of {len(trials)} trials ...")
    for t in trials:
        try:
            cfg, _ = hb.compose(spec.conf, [*t.overrides, *spec.hydra])
            exp = validate(hb.task_config(cfg))
            spec_mod.resolve_metrics(spec, exp)
        except UserError as err:
            swept = " ".join(o for o in t.overrides if o not in spec.fixed)
            raise UserError(f"trial {t.id} ({swept}): {err}") from err
        if sweep_dir is None:
            sweep_dir = Path(str(cfg.hydra.sweep.dir)).resolve()
            extra = ["trainer.progress=false"] if "progress" in (cfg.get("trainer") or {}) else []
    assert sweep_dir is not None
    return sweep_dir, extra


def _resumed(sweep_dir: Path, conf: Optional[str], overrides: list[str]) -> SweepState:
    state = SweepState.load(sweep_dir)
    spec = state.spec
    if conf and conf != spec.conf:
        raise UserError(f"cannot resume {state.dir} as conf={conf}: it is a sweep of '{spec.conf}'; drop conf=")
    name, cli, launcher, hydra, rest = spec_mod.split_cli(overrides)
    if name or launcher or hydra or rest or set(cli) - {"budget"}:
        raise UserError("--resume continues a sweep as it was described; the only override it takes is sweep.budget=N")
    if "budget" in cli:
        if spec.search == "grid":
            raise UserError("sweep.budget applies to random and optuna search; a grid runs every combination")
        spec.budget = spec_mod.settings({}, cli)["budget"]
    if spec.search == "random" and len(state.records) < (spec.budget or 0):
        new = search.random_trials(spec, len(state.records), spec.budget or 0)
        _validate(spec, new)
        for t in new:
            state.add(t)
    for r in state.records:
        _refresh(state, r)
    state.meta.setdefault("resumed_at", []).append(datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return state


def _refresh(state: SweepState, record: dict) -> None:
    """A trial's status as its run directory tells it (sweep.json may be stale)."""
    run_dir = state.dir / record["id"]
    if (run_dir / SUMMARY).is_file():
        record.update(outcome(run_dir, state.spec.metric, None, state.dir / LOGS / f"{record['id']}.log",
                                      test_metric=state.spec.test_metric))
    elif run_dir.exists():
        record.update(status="failed", metric=None, error=record.get("error") or "no summary.json")
    else:
        record.update(status="pending", metric=None)


def _plan(state: SweepState, allow_resume: bool, dry_run: bool) -> Todo:
    """The trials to run: interrupted ones with a checkpoint are resumed; the other
    unfinished ones start afresh, an old directory first renamed to <id>.failed-<n>."""
    todo: Todo = deque()
    for r in state.records:
        if r["status"] == "completed":
            continue
        run_dir = state.dir / r["id"]
        resumable = allow_resume and r["status"] == "interrupted" and _has_checkpoint(run_dir)
        if not resumable and run_dir.exists() and not dry_run:
            r.setdefault("previous_dirs", []).append(str(_set_aside(run_dir)))
        todo.append((state.trial(r), resumable))
    return todo


def _has_checkpoint(run_dir: Path) -> bool:
    last = run_dir / "checkpoints" / "last"
    return last.is_dir() and any(p.name.isdigit() for p in last.iterdir())


def _set_aside(run_dir: Path) -> Path:
    n = 1
    while (target := run_dir.with_name(f"{run_dir.name}.failed-{n}")).exists():
        n += 1
    run_dir.rename(target)
    return target


# ---------------------------------------------------------------------------- running


def _run(state: SweepState, todo: Todo, jobs: int, vectorize: bool, force: bool) -> bool:
    """Run the trials; True if interrupted."""
    spec = state.spec
    if spec.launcher:
        return _run_launcher(state, [t for t, _ in todo])
    if vectorize or force:
        if spec.search == "optuna":
            say("note: vectorized trials need the trials in advance; Optuna's trials run separately")
        else:
            interrupted, todo = _run_vectorized(state, todo, force)
            if interrupted:
                return True
    study = search.OptunaSearch(spec, state.dir) if spec.search == "optuna" else None
    if study:
        study.fail_orphans({state.record(t.id).get("optuna_number") for t, resumed in todo if resumed})

    def next_job() -> Optional[local.Job]:
        if todo:
            trial, resumed = todo.popleft()
            record = state.record(trial.id)
            if study and not (resumed and study.is_running(record.get("optuna_number"))):
                record["optuna_number"] = study.ask(0, values=trial.params)[1]
        elif study and len(state.records) < (spec.budget or 0):
            trial, number = study.ask(len(state.records))
            record, resumed = state.add(trial, optuna_number=number), False
        else:
            return None
        run_dir = state.dir / trial.id
        record.update(status="running", metric=None, error=None, run_dir=str(run_dir))
        state.save()
        say(f"[{trial.id}] {'resumed' if resumed else 'started'}: {_swept(state, trial)}")
        argv = local.resume_argv(run_dir) if resumed else \
            local.train_argv(spec.conf, trial, run_dir, state.meta.get("child_overrides", []))
        return local.Job(trial, argv, run_dir, state.dir / LOGS / f"{trial.id}.log")

    def on_done(job: local.Job, code: int) -> None:
        record = state.record(job.trial.id)
        record.update(outcome(job.run_dir, spec.metric, code, job.log, test_metric=spec.test_metric), exit_code=code)
        if study and record["status"] != "interrupted":
            study.tell(record["optuna_number"], record["metric"])
        state.save()
        _say_done(state, record)

    return local.run_pool(next_job, on_done, jobs)


def _run_vectorized(state: SweepState, todo: Todo, force: bool) -> tuple[bool, Todo]:
    """Shape-compatible fresh trials trained together in this process; the rest go back."""
    try:
        from experiments.sweep.vectorized import plan_vectorized, run_vectorized_group
    except ImportError as err:
        say(f"note: vectorized trials are not available ({err}); running each trial separately")
        return False, todo
    groups, _, reason = plan_vectorized(state.spec.conf, [t for t, resumed in todo if not resumed], force)
    if reason:
        say(f"note: {reason}")
    grouped = {t.id for group in groups for t in group}
    for group in groups:
        for t in group:
            state.record(t.id).update(status="running", error=None)
        state.save()
        say(f"[{' '.join(t.id for t in group)}] started together (vectorized)")
        error, interrupted = None, False
        try:
            run_vectorized_group(state.spec.conf, group, state.dir)
        except KeyboardInterrupt:
            interrupted = True
        except Exception as err:  # noqa: BLE001 - recorded on each trial of the group
            error = f"vectorized group failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
        for t in group:
            record = state.record(t.id)
            record.update(outcome(state.dir / t.id, state.spec.metric, test_metric=state.spec.test_metric))
            if error and record["status"] != "completed":
                record["error"] = error
            interrupted = interrupted or record["status"] == "interrupted"  # it caught the signal itself
            _say_done(state, record)
        state.save()
        if interrupted:
            return True, deque()
    return False, deque((t, r) for t, r in todo if t.id not in grouped)


def _launcher():
    try:
        from experiments.sweep.launchers import run_with_hydra_launcher
    except ImportError as err:
        raise UserError(f"hydra/launcher= needs experiments.sweep.launchers, which is not available ({err})") from err
    return run_with_hydra_launcher


def _run_launcher(state: SweepState, trials: list[Trial]) -> bool:
    """All trials through the Hydra launcher; their results are read back either way."""
    for t in trials:
        state.record(t.id).update(status="running", error=None)
    state.save()
    say(f"{len(trials)} trials handed to {' '.join(state.spec.launcher)}")
    interrupted = False
    try:
        _launcher()(state.spec.conf, trials, state.dir, state.spec.launcher)
    except KeyboardInterrupt:
        interrupted = True
    finally:  # a launcher that fails still leaves the trials that finished
        for t in trials:
            record = state.record(t.id)
            record.update(outcome(state.dir / t.id, state.spec.metric, test_metric=state.spec.test_metric))
            _say_done(state, record)
        state.save()
    return interrupted


# ---------------------------------------------------------------------------- reporting


def _swept(state: SweepState, trial: Trial) -> str:
    return " ".join(o for o in trial.overrides if o not in state.spec.fixed)


def _say_done(state: SweepState, record: dict) -> None:
    value = f"{state.spec.metric}={record['metric']:.4f}" if record["metric"] is not None else ""
    wall = f"({record['wall_time_s']:.1f} s)" if record.get("wall_time_s") is not None else ""
    error = record["error"] if record["status"] != "completed" else ""
    say(" ".join(x for x in (f"[{record['id']}] {record['status']}", value, wall, error) if x))


def _shown(path: Path) -> str:
    """A path relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _size(state: SweepState) -> str:
    if state.spec.search == "optuna":
        return f"budget {state.spec.budget} ({len(state.records)} so far)"
    return f"{len(state.records)} trials"


def _report(state: SweepState, interrupted: bool) -> int:

    unfinished = [r for r in state.records if r["status"] != "completed"]
    state.meta["status"] = "interrupted" if interrupted else "failed" if unfinished else "completed"
    state.meta["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    state.save()
    rows = results.aggregate(state)
    results.write_aggregate(state, rows)
    try:
        results.plot_metric(state)
    except Exception as err:  # noqa: BLE001 - plots are a convenience, never a failure
        say(f"note: could not draw the sweep plots: {err}")
    show(results.results_table(state))
    if rows and any(p.name == "seed" for p in state.spec.params):  # else it repeats the results table
        show(results.aggregate_table(state, rows))
    best = next((r for r in state.ranked() if r["metric"] is not None), None)
    if best:
        say(f"best trial {best['id']}: {state.spec.metric}={best['metric']:.4f}")
        say("  " + shlex.join(["nnrun", "train", f"conf={state.spec.conf}", *best["overrides"]]))
    say(f"sweep {state.meta['status']}: {state.dir}")
    if interrupted or unfinished:
        say(f"continue it with: nnrun sweep --resume {shlex.quote(str(state.dir))}")
    return 130 if interrupted else 1 if unfinished else 0


def _dry_run(state: SweepState, todo: Todo) -> int:
    from rich.table import Table
    from rich.text import Text


    spec = state.spec
    say(f"sweep {spec.conf}: {spec.search} search, metric {spec.metric} ({spec.direction}), {_size(state)} "
        f"-> {state.dir}")
    if spec.fixed:
        say("every trial: " + " ".join(spec.fixed))
    if spec.search == "optuna":
        for p in spec.params:
            say(f"  {p.name}: {search.distribution(p)}")
        missing = (spec.budget or 0) - len(state.records)
        say(f"Optuna picks {max(missing, 0)} more trials as results come in (budget {spec.budget})")
    table = Table(title=f"{len(todo)} trials to run")
    for c in ("#", "trial", "overrides", "run dir", "action"):
        table.add_column(c, overflow="fold")
    for i, (trial, resumed) in enumerate(todo):
        status = state.record(trial.id)["status"]
        action = "resume" if resumed else "start" if status == "pending" else f"restart ({status})"
        table.add_row(*map(Text, (str(i), trial.id, _swept(state, trial), _shown(state.dir / trial.id), action)))
    if todo:
        show(table)
    return 0
