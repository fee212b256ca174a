"""A sweep's record and its results: sweep.json, results.csv, aggregate.csv, tables, plots.

sweep.json holds the spec and one record per trial (overrides, params, status, metric,
wall time, run dir, error); it and results.csv are rewritten atomically after every
trial. A trial's outcome is read from its own summary.json (the run directory is the
truth), or from the child's exit code and last log line when it left none.

Not for deciding which trials to run (driver.py) or running them (local.py).
"""
from __future__ import annotations

import csv
import io
import json
import math
import signal
import statistics
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from experiments.errors import UserError
from experiments.runs import SUMMARY, read_json, write_json_atomic, write_text_atomic
from experiments.sweep.spec import SweepSpec, Trial

SWEEP_JSON = "sweep.json"
RESULTS_CSV = "results.csv"
AGGREGATE_CSV = "aggregate.csv"
LOGS = "logs"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class SweepState:
    """The sweep directory's sweep.json, in memory: spec, status and trial records."""

    def __init__(self, sweep_dir: Path, spec: SweepSpec, records: list[dict], meta: dict):
        self.dir, self.spec, self.records, self.meta = Path(sweep_dir), spec, records, meta

    @classmethod
    def new(cls, sweep_dir: Path, spec: SweepSpec, trials: list[Trial], child_overrides: list[str]) -> "SweepState":
        state = cls(sweep_dir, spec, [], {"status": "pending", "created_at": _now(), "resumed_at": [],
                                          "child_overrides": child_overrides})
        for t in trials:
            state.add(t)
        return state

    @classmethod
    def load(cls, sweep_dir: Path) -> "SweepState":
        path = Path(sweep_dir).resolve() / SWEEP_JSON
        if not path.is_file():
            raise UserError(f"{sweep_dir} is not a sweep directory (no {SWEEP_JSON}); pass a directory under "
                            "outputs/<experiment>/sweeps/")
        try:
            data = read_json(path)
            spec = SweepSpec.from_json(data["spec"])
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path} is unreadable ({type(err).__name__}: {err}); "
                            "it was not written by nnrun sweep") from err
        meta = {k: v for k, v in data.items() if k in ("status", "created_at", "resumed_at", "child_overrides")}
        return cls(path.parent, spec, data.get("trials", []), meta)

    def add(self, trial: Trial, **extra: Any) -> dict:
        record = {"id": trial.id, "overrides": trial.overrides, "params": trial.params, "status": "pending",
                  "metric": None, "test_metric": None, "wall_time_s": None, "run_dir": str(self.dir / trial.id),
                  "error": None, "previous_dirs": [], **extra}
        self.records.append(record)
        return record

    def record(self, trial_id: str) -> dict:
        return next(r for r in self.records if r["id"] == trial_id)

    @staticmethod
    def trial(record: dict) -> Trial:
        return Trial(record["id"], list(record["overrides"]), dict(record["params"]))

    def save(self) -> None:
        """sweep.json and results.csv, each replaced atomically."""
        self.meta["updated_at"] = _now()
        spec = self.spec
        write_json_atomic(self.dir / SWEEP_JSON, {
            "sweep_dir": str(self.dir), **self.meta, "conf": spec.conf, "overrides": spec.overrides,
            "search": spec.search, "metric": spec.metric, "direction": spec.direction, "budget": spec.budget,
            "spec": spec.to_json(), "trials": self.records})
        write_text_atomic(self.dir / RESULTS_CSV, _csv(self.result_rows()))

    def result_rows(self) -> list[dict]:
        metric = self.spec.metric
        rows = []
        for r in self.records:
            row = {"id": r["id"], **{p.name: _cell(r["params"].get(p.name)) for p in self.spec.params},
                   "status": r["status"], metric: r["metric"]}
            test = self.spec.test_metric
            if test and test != metric:
                row[test] = r.get("test_metric")
            rows.append({**row, "wall_time_s": r["wall_time_s"], "run_dir": r["run_dir"], "error": r["error"] or ""})
        return rows

    def ranked(self) -> list[dict]:
        """Records best first by the metric; those without a metric last, in id order."""
        scored = [r for r in self.records if r["metric"] is not None]
        scored.sort(key=lambda r: r["metric"], reverse=self.spec.direction == "max")
        return scored + [r for r in self.records if r["metric"] is None]


# ---------------------------------------------------------------------------- one trial's outcome


def outcome(run_dir: Path, metric: str, exit_code: Optional[int] = None, log: Optional[Path] = None,
            test_metric: Optional[str] = None) -> dict:
    """status, metric, test_metric, wall_time_s and error of a finished (or vanished) trial."""
    summary = read_json(run_dir / SUMMARY) if (run_dir / SUMMARY).is_file() else None
    status, error = (summary or {}).get("status", "failed"), (summary or {}).get("error")
    if summary is None or status not in ("completed", "interrupted", "failed"):  # "running": it died mid-run
        killed = exit_code is not None and exit_code < 0  # by a signal, before it could record anything
        status = "interrupted" if killed else "failed"
        error = _exit_error(exit_code, log, "left no summary.json" if summary is None else "stopped without finishing")
    if summary is None:
        return {"status": status, "metric": None, "test_metric": None, "wall_time_s": None, "error": error}
    value = _number(dig(summary, metric))
    if status == "completed" and value is None:
        error = f"no finite '{metric}' in summary.json"
    return {"status": status, "metric": value if status == "completed" else None,
            "test_metric": _number(dig(summary, test_metric)) if test_metric else None,
            "wall_time_s": summary.get("wall_time_s"),
            "error": error}


def _exit_error(code: Optional[int], log: Optional[Path], what: str) -> str:
    last = _last_line(log) if log else ""
    if code is None:
        head = what
    elif code < 0:
        head = f"killed by {signal.Signals(-code).name}" if -code in signal.valid_signals() else f"killed ({code})"
    else:
        head = f"exit code {code}"
    return f"{head}: {last}" if last else head


def _last_line(log: Path) -> str:
    """The child's error line if it printed one, else its last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    errors = [ln for ln in lines if ln.startswith("nnrun: error:")]
    return (errors or lines or [""])[-1][:500]


def dig(data: Any, path: str) -> Any:
    """The value at a dotted path; a key may itself hold dots (`test.flip.0.1.overlap` finds
    summary["test"]["flip.0.1.overlap"]): at each level the longest key that matches wins."""
    parts = path.split(".")
    while parts:
        if not isinstance(data, dict):
            return None
        for i in range(len(parts), 0, -1):
            key = ".".join(parts[:i])
            if key in data:
                data, parts = data[key], parts[i:]
                break
        else:
            return None
    return data


def _number(value: Any) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) and not isinstance(value, bool) else None


# ---------------------------------------------------------------------------- seeds aggregated


def aggregate(state: SweepState) -> list[dict]:
    """Trials that differ only by `seed`, grouped: mean, std (sample) and n of the metric,
    best first. Without a swept seed each configuration is its own group (n=1), so every
    search (grid, random, Optuna) writes the same aggregate.csv."""
    names = [p.name for p in state.spec.params]
    if not state.records:
        return []
    others = [n for n in names if n != "seed"]
    groups: OrderedDict[str, list[dict]] = OrderedDict()
    for r in state.records:
        groups.setdefault(json.dumps([r["params"].get(n) for n in others]), []).append(r)
    rows = []
    for members in groups.values():
        values = [r["metric"] for r in members if r["metric"] is not None]
        rows.append({**{n: _cell(members[0]["params"].get(n)) for n in others}, "n": len(values),
                     "mean": statistics.fmean(values) if values else None,
                     "std": statistics.stdev(values) if len(values) > 1 else None,
                     "seeds": " ".join(str(r["params"].get("seed", "-")) for r in members if r["metric"] is not None),
                     "failed": len(members) - len(values)})
    scored = sorted((r for r in rows if r["mean"] is not None), key=lambda r: r["mean"],
                    reverse=state.spec.direction == "max")
    return scored + [r for r in rows if r["mean"] is None]


def write_aggregate(state: SweepState, rows: list[dict]) -> Optional[Path]:
    if not rows:
        return None
    path = state.dir / AGGREGATE_CSV
    write_text_atomic(path, _csv(rows))
    return path


def _csv(rows: list[dict]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return buf.getvalue()


def _cell(value: Any) -> Any:
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


# ---------------------------------------------------------------------------- tables


def results_table(state: SweepState) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"sweep {state.dir.name}: {state.spec.metric} ({state.spec.direction})")
    names = [p.name for p in state.spec.params]
    test = state.spec.test_metric if state.spec.test_metric != state.spec.metric else None
    errors = any(r["error"] for r in state.records)  # no empty column when every trial went well
    for c in ["trial", *names, "status", state.spec.metric, *([test] if test else []), "wall s",
              *(["error"] if errors else [])]:
        table.add_column(c, justify="right" if c in ("wall s", test, state.spec.metric) else "left",
                         overflow="fold")  # values fold onto more lines, never cut
    for r in state.ranked():
        table.add_row(*map(Text, [r["id"], *(_param_text(r["params"].get(n)) for n in names), r["status"],
                                  _fmt(r["metric"]), *([_fmt(r.get("test_metric"))] if test else []),
                                  _fmt(r["wall_time_s"], 1), *([r["error"] or ""] if errors else [])]))
    return table


def _param_text(value: Any) -> str:
    """A parameter's value for a table: floats to 4 significant digits (Optuna draws 0.00123456789...)."""
    return f"{value:.4g}" if isinstance(value, float) else str(_cell(value))


def aggregate_table(state: SweepState, rows: list[dict]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{state.spec.metric} over seeds")
    for c in [k for k in rows[0] if k != "failed"]:
        table.add_column(c, justify="right" if c in ("n", "mean", "std") else "left")
    for row in rows:
        table.add_row(*(Text(_fmt(v) if k in ("mean", "std") else _param_text(v)) for k, v in row.items() if k != "failed"))
    return table


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if digits > 1 else f"{value:.1f}"
    return str(value)


# ---------------------------------------------------------------------------- plots


def _numeric(values: list) -> bool:
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in values)


def metric_plots(state: SweepState) -> list[dict]:
    """What plot_metric draws, one dict per swept parameter other than `seed`: `param`,
    `log` (x axis), `numeric`, `labels` (categorical x), `spread` (the legend's words) and
    `series` {name of the other parameters' values: [(x, mean, min, max, n), ...]}."""
    done = [r for r in state.records if r["metric"] is not None]
    params = [p for p in state.spec.params if p.name != "seed"]
    if not done:
        return []
    seeds = {json.dumps(r["params"].get("seed")) for r in done}
    spread = f"mean and min-max over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
    plots = []
    for p in params:
        others = [q.name for q in params if q is not p]
        xs_all = [r["params"].get(p.name) for r in done]
        numeric = _numeric(xs_all)
        labels = list(OrderedDict.fromkeys(map(str, xs_all)))
        grouped: OrderedDict[str, dict] = OrderedDict()
        for r in done:
            name = ", ".join(f"{q}={_cell(r['params'].get(q))}" for q in others)
            x = r["params"].get(p.name)
            grouped.setdefault(name, {}).setdefault(json.dumps(x), (x, []))[1].append(r["metric"])
        series = {}
        for name, points in grouped.items():
            rows = [(x if numeric else labels.index(str(x)), statistics.fmean(ys), min(ys), max(ys), len(ys))
                    for x, ys in points.values()]
            series[name] = sorted(rows, key=lambda t: t[0])
        positive = numeric and all(x > 0 for x in xs_all)
        log = bool(positive and (p.log or max(xs_all) / min(xs_all) > 100))
        plots.append({"param": p.name, "log": log, "numeric": numeric, "labels": labels, "spread": spread,
                      "series": series})
    return plots


def plot_metric(state: SweepState) -> list[Path]:
    """plots/metric_vs_<param>.png per swept parameter other than `seed`: the metric's mean
    over seeds with its min-max range (one line per combination of the other parameters);
    a log axis where the parameter is declared log (or its values span over two decades)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for plot in metric_plots(state):
        fig, ax = plt.subplots(figsize=(6, 4))
        series = plot["series"]
        for name, rows in series.items():
            xs, means, lows, highs, _ = zip(*rows)
            ax.errorbar(xs, means, yerr=[[m - lo for m, lo in zip(means, lows)], [hi - m for m, hi in zip(means, highs)]],
                        marker="o", capsize=3, label=name if len(series) > 1 else None,
                        linestyle="-" if plot["numeric"] else "none")
        for mark in state.spec.marks:
            if mark["param"] == plot["param"] and plot["numeric"]:
                ax.axvline(mark["at"], color="k", lw=1, alpha=0.6)
                ax.annotate(f" {mark['label'] or mark['at']}", (mark["at"], 0.02), xycoords=("data", "axes fraction"),
                            fontsize=7, rotation=90, va="bottom")
        if plot["log"]:
            ax.set_xscale("log")
        if not plot["numeric"]:
            labels = plot["labels"]
            ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0)
        if 1 < len(series) <= 8:
            ax.legend(fontsize=7)
        ax.set_xlabel(plot["param"] + (" (log scale)" if plot["log"] else ""))
        ax.set_ylabel(f"{state.spec.metric} ({state.spec.direction})")
        ax.set_title(f"sweep {state.dir.name} ({state.spec.conf})\n{state.spec.metric} vs {plot['param']}: "
                     f"{plot['spread']}", fontsize=10)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = state.dir / "plots" / f"metric_vs_{plot['param'].replace('/', '_')}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
