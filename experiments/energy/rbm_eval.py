"""AIS log-likelihood of a trained RBM run, after the fact, with chosen AIS settings:

    python -m experiments.energy.rbm_eval outputs/rbm_mnist/<run> --runs 100 --betas 14500

Restores the run's `best` (or --which last) checkpoint, estimates log Z by annealed
importance sampling from the base-rate model of the training data, and writes
<run>/ais-<which>-<runs>x<betas>.json with log Z, its 3-standard-error bracket, and the mean
test log-likelihood with its standard error over the test examples; for <= 20 hidden units
also the exact log Z (enumeration) and the AIS error.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np


def evaluate(run_dir: Path, runs: int, betas: int, which: str = "best", seed: int = 0) -> dict:
    import orbax.checkpoint as ocp
    from omegaconf import OmegaConf

    from experiments.config import validate
    from experiments.data import load_dataset
    from experiments.models import build_model, data_info
    from experiments.models.rbm import (MAX_EXACT_HIDDEN, RBMParams, ais_log_z, base_rate_bias, exact_log_z,
                                        mean_log_likelihood)

    run_dir = Path(run_dir).resolve()
    exp = validate(OmegaConf.load(run_dir / "config.yaml"))
    data = load_dataset(exp.data)
    rbm = build_model(exp.model, data_info(data))
    root = run_dir / "checkpoints" / which
    step = max(int(p.name) for p in root.iterdir() if p.name.isdigit())
    with ocp.StandardCheckpointer() as ck:
        raw = ck.restore(root / str(step) / "default")
    p = raw["inner"]["params"]
    params = RBMParams(*(np.asarray(p[k] if isinstance(p, dict) else p[i]) for i, k in enumerate(("W", "b", "c"))))
    flat = lambda s: s.x.reshape(len(s), -1).astype(np.float32)  # noqa: E731
    t0 = time.perf_counter()
    res = ais_log_z(rbm, params, jax.random.key(seed), runs, betas, base_rate_bias(flat(data.train).mean(0)))
    ll, se = mean_log_likelihood(rbm, params, flat(data.test), res.log_z)
    out = {"run": str(run_dir), "checkpoint": which, "step": step, "runs": res.runs, "betas": res.betas,
           "log_z": res.log_z, "log_z_3se": [res.log_z_low, res.log_z_high], "test_log_likelihood": ll,
           "test_log_likelihood_se": se, "seconds": time.perf_counter() - t0}
    if rbm.hidden_units <= MAX_EXACT_HIDDEN:  # small enough to check AIS against the truth
        exact = exact_log_z(rbm, params)
        out.update({"exact_log_z": exact, "ais_minus_exact": res.log_z - exact,
                    "exact_test_log_likelihood": mean_log_likelihood(rbm, params, flat(data.test), exact)[0]})
    (run_dir / f"ais-{which}-{runs}x{betas}.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--betas", type=int, default=14500)
    ap.add_argument("--which", default="best", choices=("best", "last"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(evaluate(a.run_dir, a.runs, a.betas, a.which, a.seed), indent=2))


if __name__ == "__main__":
    main()
