"""What a sweep is: its swept parameters, fixed overrides, search, metric and trials.

Overrides are parsed with Hydra's own override parser and grids expand the way Hydra's
BasicSweeper does (a later override of the same key replaces an earlier one, in place;
the trials are the Cartesian product in key order), so the grammar is exactly Hydra's:
comma lists, range(), choice(), interval(), tag(log, ...), glob() over group choices.
A sweep may also be described in conf/sweep/<name>.yaml.

Not for sampling (search.py), running trials (local.py) or results (results.py).
"""
from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import yaml

from experiments.errors import UserError

SEARCHES = ("grid", "random", "optuna")
SETTINGS = ("search", "metric", "direction", "budget", "seed", "vectorize", "startup_trials")
YAML_KEYS = (*SETTINGS, "params", "overrides", "marks")
DIRECTIONS = {"max": "max", "maximize": "max", "min": "min", "minimize": "min"}


@dataclass
class Trial:
    """One point of a sweep: its id (its directory's name), the overrides that train
    it (fixed and swept), and the swept values (key without +/~ prefix -> value)."""

    id: str
    overrides: list[str]
    params: dict[str, Any]


@dataclass
class Param:
    """One swept override. Discrete kinds (choice, range) list their values and the
    same values as override strings; an interval has bounds."""

    key: str  # Hydra's key element as written, e.g. `optim.lr`, `+data.val_size`, `model`
    kind: str  # choice | range | interval
    values: list[Any] = field(default_factory=list)
    strings: list[str] = field(default_factory=list)
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False

    @property
    def name(self) -> str:
        return self.key.lstrip("+~")

    def override(self, value: Any) -> str:
        """`key=value` for one value of this parameter."""
        if self.kind == "interval":
            return f"{self.key}={value!r}"
        index = next(i for i, v in enumerate(self.values) if type(v) is type(value) and v == value)
        return f"{self.key}={self.strings[index]}"


@dataclass
class SweepSpec:
    """Everything needed to (re)create a sweep's trials; stored in sweep.json."""

    conf: str
    fixed: list[str]  # overrides every trial gets
    params: list[Param]
    search: str = "grid"
    metric: Optional[str] = None  # dotted path into each trial's summary.json; None: the experiment's declared one
    direction: Optional[str] = None  # max | min; None: the metric's declared direction
    test_metric: Optional[str] = None  # the test number shown beside it (set from the experiment)
    budget: Optional[int] = None  # trials in all, for random and optuna
    seed: int = 0  # seed of the search itself (random sampling, Optuna's sampler)
    vectorize: bool = False
    startup_trials: int = 10  # Optuna: random trials before the TPE model takes over
    name: Optional[str] = None  # conf/sweep/<name>.yaml, if any
    launcher: list[str] = field(default_factory=list)  # hydra/launcher=..., hydra.launcher.*
    hydra: list[str] = field(default_factory=list)  # hydra.sweep.* overrides: where the sweep goes
    overrides: list[str] = field(default_factory=list)  # as given on the command line
    marks: list[dict] = field(default_factory=list)  # reference lines on the plots: {param, at, label}

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "SweepSpec":
        data = dict(data)
        data["params"] = [Param(**p) for p in data.get("params", [])]
        return cls(**data)


# ---------------------------------------------------------------------------- parsing


def parse(overrides: list[str]) -> list[Any]:
    """Hydra's Override objects, or a UserError naming the bad override."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as err:
            lines = str(err).strip().splitlines()
            detail = lines[1] if len(lines) > 1 and not lines[1].startswith("See ") else (lines or [""])[0]
            raise UserError(f"bad override '{text}': {detail} (Hydra's override grammar)") from err
    return parsed


def merge(parsed: list[Any]) -> "OrderedDict[str, Any]":
    """Key element -> its last Override, in first-seen key order (as BasicSweeper)."""
    merged: OrderedDict[str, Any] = OrderedDict()
    for o in parsed:
        merged[o.get_key_element()] = o
    return merged


def to_param(o: Any) -> Param:
    from hydra.core.override_parser.types import Glob, Transformer

    key = o.get_key_element()
    if o.is_interval_sweep():
        v = o.value()
        return Param(key, "interval", low=float(v.start), high=float(v.end), log="log" in v.tags)
    if isinstance(o.value(), Glob):
        o.config_loader = _GroupLister()
    values = list(o.sweep_iterator())  # once: shuffle() must give one order
    if not values:
        raise UserError(f"override '{o.input_line}' sweeps over no values")
    return Param(key, "range" if o.is_range_sweep() else "choice", values, [Transformer.str(v) for v in values])


class _GroupLister:
    """What glob() needs from Hydra's config loader: the options of a config group."""

    def get_group_options(self, group: str, results_filter: Any = None) -> list[str]:
        from experiments.config import config_dir, config_dirs

        return sorted({p.stem for d in config_dirs() for p in (d / group).glob("*.yaml")})


def split(overrides: list[str]) -> tuple[list[str], list[Param]]:
    """Fixed overrides (as written) and swept parameters, after Hydra's merge rules."""
    fixed, params = [], []
    for o in merge(parse(overrides)).values():
        if o.is_sweep_override():
            params.append(to_param(o))
        else:
            fixed.append(o.input_line)
    return fixed, params


# ---------------------------------------------------------------------------- YAML and CLI


def sweep_yaml_names() -> list[str]:
    from experiments.config import config_dir, config_dirs

    return sorted({p.stem for d in config_dirs() for p in (d / "sweep").glob("*.yaml")})


def load_yaml(name: str) -> dict:
    """conf/sweep/<name>.yaml as a dict, checked for unknown keys."""
    from experiments.config import config_dir, config_dirs

    path = next((d / "sweep" / f"{name}.yaml" for d in config_dirs() if (d / "sweep" / f"{name}.yaml").is_file()),
                config_dir() / "sweep" / f"{name}.yaml")
    if not path.is_file():
        raise UserError(f"unknown sweep '{name}'; available in conf/sweep/: {', '.join(sweep_yaml_names()) or 'none'}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a mapping with keys: {', '.join(YAML_KEYS)}")
    unknown = [k for k in data if k not in YAML_KEYS]
    if unknown:
        raise UserError(f"unknown key '{unknown[0]}' in {path}; allowed keys: {', '.join(YAML_KEYS)}")
    return data


def yaml_overrides(data: dict) -> list[str]:
    """The YAML's fixed overrides, then one override per parameter in Hydra's grammar."""
    fixed = data.get("overrides") or []
    params = data.get("params") or {}
    if not isinstance(fixed, list) or not isinstance(params, dict):
        raise UserError("a sweep YAML's 'overrides' must be a list and its 'params' a mapping")
    return [*map(str, fixed), *(f"{key}={_grammar(key, value)}" for key, value in params.items())]


def _grammar(key: str, value: Any) -> str:
    """A YAML parameter value as Hydra sweep grammar: a string is taken as written; a list
    is a choice; {interval: [a, b], log: bool}, {choice: [...]}, {range: [start, stop, step]}."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return f"choice({', '.join(map(_literal, value))})"
    if isinstance(value, dict):
        kinds = [k for k in ("interval", "choice", "range") if k in value]
        extra = set(value) - {"interval", "choice", "range", "log"}
        if len(kinds) != 1 or extra or not isinstance(value[kinds[0]], list):
            raise UserError(f"bad sweep parameter '{key}': use a list, a Hydra sweep string, or one of "
                            "{interval: [low, high], log: true}, {choice: [...]}, {range: [start, stop, step]}")
        body = f"{kinds[0]}({', '.join(map(_literal, value[kinds[0]]))})"
        return f"tag(log, {body})" if value.get("log") else body
    return _literal(value)


def _literal(value: Any) -> str:
    """A YAML scalar as Hydra grammar. A plain word (adam, 1e-4 - which YAML reads as a
    string) is passed unquoted, so that Hydra types it as it would on the command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):  # a list-valued choice, e.g. schedule.step_epochs: [[3, 6], [5]]
        return f"[{', '.join(map(_literal, value))}]"
    if re.fullmatch(r"[A-Za-z0-9_.+\-/]+", str(value)):
        return str(value)
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def marks(value: Any) -> list[dict]:
    """The YAML's `marks`: reference lines drawn on plots/metric_vs_<param>.png, each
    {param: <swept key>, at: <number>, label: <text>} (e.g. a published threshold)."""
    if value is None:
        return []
    usage = "a sweep YAML's 'marks' is a list of {param: KEY, at: NUMBER, label: TEXT}"
    if not isinstance(value, list):
        raise UserError(usage)
    out = []
    for m in value:
        if (not isinstance(m, dict) or set(m) - {"param", "at", "label"} or not isinstance(m.get("param"), str)
                or not isinstance(m.get("at"), (int, float)) or isinstance(m.get("at"), bool)):
            raise UserError(f"{usage}; got {m!r}")
        out.append({"param": m["param"], "at": float(m["at"]), "label": str(m.get("label", ""))})
    return out


def settings(data: dict, cli: dict[str, Any]) -> dict[str, Any]:
    """Search settings from the YAML, then `sweep.KEY=VALUE` overrides, checked."""
    out = {k: data[k] for k in SETTINGS if k in data}
    out.update(cli)
    if out.get("search", "grid") not in SEARCHES:
        raise UserError(f"bad sweep search '{out['search']}'; one of: {', '.join(SEARCHES)}")
    if out.get("direction") is not None:
        direction = str(out["direction"]).lower()
        if direction not in DIRECTIONS:
            raise UserError(f"bad sweep direction '{out['direction']}'; use max or min")
        out["direction"] = DIRECTIONS[direction]
    for key in ("budget", "seed", "startup_trials"):
        if key in out and out[key] is not None and (not isinstance(out[key], int) or isinstance(out[key], bool)):
            raise UserError(f"bad value for 'sweep.{key}': {out[key]!r}; it must be an integer")
    if not isinstance(out.get("vectorize", False), bool):
        raise UserError(f"bad value for 'sweep.vectorize': {out['vectorize']!r}; use true or false")
    if out.get("budget") is not None and out["budget"] < 1:
        raise UserError(f"bad value for 'sweep.budget': {out['budget']}; it must be >= 1")
    if "metric" in out and (not isinstance(out["metric"], str) or not out["metric"]):
        raise UserError("bad value for 'sweep.metric': give a dotted path into summary.json, e.g. best.loss")
    return out


def split_cli(overrides: list[str]) -> tuple[Optional[str], dict[str, Any], list[str], list[str], list[str]]:
    """Sort the command line: sweep=NAME, sweep.KEY=VALUE settings, launcher overrides,
    hydra.sweep.* overrides (they place the sweep directory), and the trials' overrides."""
    name, cli, launcher, hydra, rest = None, {}, [], [], []
    for o in overrides:
        key, _, value = o.partition("=")
        bare = key.lstrip("+~")
        if bare == "sweep":
            name = value
        elif bare.startswith("sweep."):
            if bare[6:] not in SETTINGS:
                raise UserError(f"unknown sweep setting '{bare}'; allowed: {', '.join('sweep.' + s for s in SETTINGS)}")
            cli[bare[6:]] = yaml.safe_load(value) if value else None
        elif bare.startswith(("hydra/launcher", "hydra.launcher")):
            launcher.append(o)
        elif bare in ("hydra.run.dir", "hydra.runtime.output_dir"):
            raise UserError(f"'{bare}' cannot be set for a sweep (each trial gets its own); "
                            "set hydra.sweep.dir instead")
        elif bare.startswith("hydra.sweep."):
            hydra.append(o)
        else:
            rest.append(o)
    return name, cli, launcher, hydra, rest


def build(conf: str, overrides: list[str]) -> SweepSpec:
    """The sweep that `nnrun sweep conf=CONF OVERRIDES` describes (not yet validated
    against the experiment's schema: see driver.py)."""
    name, cli, launcher, hydra, rest = split_cli(overrides)
    data = load_yaml(name) if name else {}
    fixed, params = split([*yaml_overrides(data), *rest])
    opts = {k: v for k, v in settings(data, cli).items() if v is not None}
    spec = SweepSpec(conf, fixed, params, name=name, launcher=launcher, hydra=hydra, overrides=list(overrides),
                     marks=marks(data.get("marks")), **opts)
    check(spec)
    return spec


def check(spec: SweepSpec) -> None:
    if not spec.params:
        raise UserError("nothing to sweep: give at least one swept override "
                        "(e.g. optim.lr=0.1,0.01 or seed=range(0,3)) "
                        "or sweep=<name> (conf/sweep/)")
    for p in spec.params:
        if p.kind == "interval" and not (p.low < p.high and (p.low > 0 or not p.log)):
            raise UserError(f"bad interval for '{p.key}': [{p.low}, {p.high}]; it needs low < high"
                            + (" and low > 0 on a log scale" if p.log else ""))
    if spec.search == "grid":
        interval = next((p for p in spec.params if p.kind == "interval"), None)
        if interval:
            raise UserError(f"'{interval.key}' is an interval(): a grid cannot enumerate it; "
                            "use sweep.search=random or sweep.search=optuna with sweep.budget=N")
        if spec.budget is not None:
            raise UserError("sweep.budget applies to random and optuna search; a grid runs every combination")
    elif spec.budget is None:
        raise UserError(f"{spec.search} search needs a trial budget: "
                        "add sweep.budget=N (or budget: N in the sweep YAML)")


# ---------------------------------------------------------------------------- trials


def trial_id(index: int, total: int) -> str:
    return f"{index:0{max(3, len(str(max(total - 1, 0))))}d}"


def make_trial(spec: SweepSpec, index: int, total: int, values: dict[str, Any]) -> Trial:
    """A trial from one value per parameter (keyed by Param.name)."""
    swept = [p.override(values[p.name]) for p in spec.params]
    return Trial(trial_id(index, total), [*spec.fixed, *swept], {p.name: values[p.name] for p in spec.params})


def grid(spec: SweepSpec) -> list[Trial]:
    """Every combination, in Hydra's BasicSweeper order (the last key varies fastest)."""
    combos = list(itertools.product(*[p.values for p in spec.params]))
    return [make_trial(spec, i, len(combos), {p.name: v for p, v in zip(spec.params, combo)})
            for i, combo in enumerate(combos)]


def resolve_metrics(spec: SweepSpec, exp: Any) -> None:
    """Fill the metric, its direction and the test column from the experiment's declared
    metrics, where the sweep did not set them."""
    from experiments.training import direction_of, ranking_metrics

    ranking = ranking_metrics(exp)
    if spec.metric is None:
        spec.metric = ranking.best
    if spec.direction is None:
        spec.direction = direction_of(exp, spec.metric) or "max"
    if spec.test_metric is None:
        spec.test_metric = ranking.test
