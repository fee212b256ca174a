"""Where the trials of a random or a Bayesian (Optuna) search come from.

Random search: trial i is drawn from a generator seeded by (sweep seed, i), so the same
sweep seed gives the same trials, and a resumed sweep with a larger budget draws new
ones. Optuna: a persistent study in the sweep directory (a journal file), driven through
ask-and-tell, so that resuming the sweep continues the same study.

Not for running trials or reading their results (local.py, results.py).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional

from experiments.sweep.spec import Param, SweepSpec, Trial, make_trial

JOURNAL = "optuna.journal"
STUDY = "nnrun"


# ---------------------------------------------------------------------------- random


def random_trials(spec: SweepSpec, start: int, stop: int) -> list[Trial]:
    """Trials start..stop-1 of a random search."""
    return [random_trial(spec, i) for i in range(start, stop)]


def random_trial(spec: SweepSpec, index: int) -> Trial:
    import numpy as np

    rng = np.random.default_rng([spec.seed, index])
    return make_trial(spec, index, spec.budget or 1, {p.name: _draw(rng, p) for p in spec.params})


def _draw(rng: Any, p: Param) -> Any:
    if p.kind != "interval":
        return p.values[int(rng.integers(len(p.values)))]
    x = math.exp(rng.uniform(math.log(p.low), math.log(p.high))) if p.log else rng.uniform(p.low, p.high)
    return float(f"{x:.4g}")  # 4 significant digits: readable command lines, same trials


def corner_values(spec: SweepSpec) -> list[dict[str, Any]]:
    """A few value sets that together use every discrete value and both ends of every
    interval: what is validated up front when the trials themselves are not yet known."""
    n = max([2, *(len(p.values) for p in spec.params)])
    return [{p.name: p.values[i % len(p.values)] if p.kind != "interval" else (p.low, p.high)[i % 2]
             for p in spec.params} for i in range(n)]


# ---------------------------------------------------------------------------- optuna


class OptunaSearch:
    """An Optuna study stored in `<sweep_dir>/optuna.journal`, asked for one trial at a time."""

    def __init__(self, spec: SweepSpec, sweep_dir: Path):
        import optuna
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec = spec
        self.study = optuna.create_study(
            storage=JournalStorage(JournalFileBackend(str(Path(sweep_dir) / JOURNAL))), study_name=STUDY,
            load_if_exists=True, direction="maximize" if spec.direction == "max" else "minimize")
        # seeded by the number of trials so far: a resumed study must not redraw the same startup points
        self.study.sampler = optuna.samplers.TPESampler(seed=spec.seed + len(self.study.trials),
                                                        n_startup_trials=spec.startup_trials)
        self.distributions = {p.name: distribution(p) for p in spec.params}

    def ask(self, index: int, values: Optional[dict[str, Any]] = None) -> tuple[Trial, int]:
        """A new trial (sampled, or with `values` when re-running a trial afresh) and its
        Optuna trial number."""
        if values is not None:
            self.study.enqueue_trial({p.name: _to_optuna(p, values[p.name]) for p in self.spec.params},
                                     skip_if_exists=False)
        t = self.study.ask(self.distributions)
        chosen = {p.name: _from_optuna(p, t.params[p.name]) for p in self.spec.params}
        return make_trial(self.spec, index, self.spec.budget or 1, chosen), t.number

    def is_running(self, number: Optional[int]) -> bool:
        from optuna.trial import TrialState

        return number is not None and any(t.number == number and t.state == TrialState.RUNNING
                                          for t in self.study.get_trials(deepcopy=False))

    def tell(self, number: int, value: Optional[float]) -> None:
        """The trial's metric, or None for a failed trial."""
        from optuna.trial import TrialState

        if value is None:
            self.study.tell(number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            self.study.tell(number, value, skip_if_finished=True)

    def fail_orphans(self, keep: set[int]) -> None:
        """Close trials left running by a sweep that died, except those about to be resumed."""
        from optuna.trial import TrialState

        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number not in keep:
                self.tell(t.number, None)


def distribution(p: Param) -> Any:
    """interval -> float (log if asked for), an evenly spaced int range -> int, else categorical."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if p.kind == "interval":
        return FloatDistribution(p.low, p.high, log=p.log)
    ints = sorted(v for v in p.values if isinstance(v, int) and not isinstance(v, bool))
    if p.kind == "range" and len(ints) == len(p.values) > 1:
        step = ints[1] - ints[0]
        if step > 0 and ints == list(range(ints[0], ints[-1] + 1, step)):
            return IntDistribution(ints[0], ints[-1], step=step)
    return CategoricalDistribution(p.values if _primitive(p) else p.strings)


def _primitive(p: Param) -> bool:
    """Optuna's categories must be None, bool, int, float or str; others go by their string."""
    return all(v is None or isinstance(v, (bool, int, float, str)) for v in p.values)


def _to_optuna(p: Param, value: Any) -> Any:
    return value if p.kind == "interval" or _primitive(p) else p.strings[p.values.index(value)]


def _from_optuna(p: Param, value: Any) -> Any:
    if p.kind == "interval":
        return float(value)
    return value if _primitive(p) else p.values[p.strings.index(value)]
