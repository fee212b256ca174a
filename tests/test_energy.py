"""Energy networks beyond the deterministic Hopfield net: the RBM (free energy, exact log Z,
AIS, CD statistics, the contrastive-divergence trainer through the CLI), the stochastic
Hopfield network (Gibbs sampling against the exact Boltzmann distribution, annealing) and the
Boltzmann machine (exact against sampled statistics, the 4-2-4 encoder). Deterministic."""
from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import assert_one_line_error, read_json, restore_raw
from experiments.errors import UserError
from experiments.models import boltzmann as B
from experiments.models import hopfield as H
from experiments.models.rbm import RBM, RBMParams, ais_betas, ais_log_z, exact_log_z


def _rbm(v: int, h: int, seed: int, scale: float = 0.3) -> tuple[RBM, RBMParams]:
    k = jax.random.split(jax.random.key(seed), 3)
    return RBM(v, h), RBMParams(scale * jax.random.normal(k[0], (v, h)), 0.5 * jax.random.normal(k[1], (v,)),
                                0.5 * jax.random.normal(k[2], (h,)))


def _brute_log_z(p: RBMParams) -> float:
    w, b, c = (np.asarray(a, np.float64) for a in p)
    vs = np.array(list(itertools.product((0, 1), repeat=len(b))), np.float64)
    hs = np.array(list(itertools.product((0, 1), repeat=len(c))), np.float64)
    neg_e = vs @ w @ hs.T + (vs @ b)[:, None] + (hs @ c)[None, :]
    m = neg_e.max()
    return float(m + np.log(np.exp(neg_e - m).sum()))


# --------------------------------------------------------------------------- RBM


def test_free_energy_and_exact_log_z_match_brute_force_enumeration():
    rbm, p = _rbm(6, 4, seed=0)
    log_z = _brute_log_z(p)
    assert exact_log_z(rbm, p) == pytest.approx(log_z, abs=1e-4)
    vs = jnp.asarray(list(itertools.product((0, 1), repeat=6)), jnp.float32)
    # p(v) = exp(-F(v)) / Z sums to one over every visible state
    assert float(jnp.sum(jnp.exp(-rbm.free_energy(p, vs) - log_z))) == pytest.approx(1.0, abs=1e-4)


def test_ais_agrees_with_exact_log_z_for_a_20_hidden_rbm():
    rbm, p = _rbm(64, 20, seed=1, scale=0.2)
    exact = exact_log_z(rbm, p)
    res = ais_log_z(rbm, p, jax.random.key(2), runs=64, betas=1000, base_bias=p.b)
    assert abs(res.log_z - exact) < 1.0, (res, exact)
    assert res.log_z_low <= res.log_z <= res.log_z_high
    assert len(ais_betas(14500)) == 14501 and ais_betas(100)[0] == 0.0 and ais_betas(100)[-1] == 1.0


@pytest.mark.slow  # MNIST, compilation of long chains: past the default suite's budget
def test_cd_statistics_are_the_negative_log_likelihood_gradient_with_long_chains():
    rbm, p = _rbm(5, 3, seed=3)
    data = jnp.asarray(np.random.default_rng(0).integers(0, 2, (8, 5)), jnp.float32)

    def nll(q):
        vs = jnp.asarray(list(itertools.product((0, 1), repeat=5)), jnp.float32)
        log_z = jax.nn.logsumexp(-rbm.free_energy(q, vs))
        return jnp.mean(rbm.free_energy(q, data)) + log_z

    exact = jax.grad(nll)(p)
    # positive phase on the data; negative phase from many long chains (near equilibrium)
    start = jnp.tile(data, (500, 1))
    grads, _ = jax.jit(rbm.cd_statistics, static_argnums=4)(p, data, start, jax.random.key(4), 30)
    np.testing.assert_allclose(grads.W, exact.W, atol=0.03)
    np.testing.assert_allclose(grads.c, exact.c, atol=0.03)


def test_pseudo_log_likelihood_is_the_one_bit_conditional():
    rbm, p = _rbm(6, 4, seed=5)
    v = jnp.asarray([[1, 0, 1, 1, 0, 0]], jnp.float32)
    key = jax.random.key(0)
    i = int(jax.random.randint(key, (1,), 0, 6)[0])
    flipped = v.at[0, i].set(1 - v[0, i])
    # log p(v_i | v_-i) = -F(v) - log(exp(-F(v)) + exp(-F(v~)))
    f, g = float(rbm.free_energy(p, v)[0]), float(rbm.free_energy(p, flipped)[0])
    expected = 6 * (-f - np.logaddexp(-f, -g))
    assert float(rbm.pseudo_log_likelihood(p, v, key)[0]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow  # MNIST, compilation of long chains: past the default suite's budget
def test_rbm_trains_through_the_cli_with_pcd_chains_in_the_checkpoint(nnrun_main, outputs):
    run_dir = outputs / "rbm"
    out = nnrun_main("train", "conf=rbm_mnist", "model.hidden=8", "data.train_subset=600", "data.val_size=100",
                     "data.test_subset=200", "trainer.epochs=1", "trainer.batch_size=50", "trainer.log_every=5",
                     "trainer.persistent=true", "trainer.ais_runs=8", "trainer.ais_betas=50",
                     "trainer.classifier_epochs=1", "trainer.sample_steps=4", f"hydra.run.dir={run_dir}")
    assert out.code == 0, out.err
    report = read_json(run_dir / "rbm_report.json")
    assert report["ais"]["test_log_likelihood"] < 0 and report["ais"]["betas"] >= 50
    assert 0.0 <= report["classifier"]["test_accuracy"] <= 1.0
    assert "gap" in report["free_energy_gap"]
    for name in ("filters.png", "samples.png", "reconstructions.png"):
        assert (run_dir / "plots" / name).is_file()
    state, _ = restore_raw(run_dir / "checkpoints")
    chains = np.asarray(state["inner"]["chains"])
    assert chains.shape == (50, 784) and set(np.unique(chains)) <= {0.0, 1.0}
    summary = read_json(run_dir / "summary.json")
    assert summary["test"]["mse"] < 0.25 and summary["test"]["pseudo_ll"] < 0
    from experiments.energy.rbm_eval import evaluate

    again = evaluate(run_dir, runs=16, betas=200)  # AIS after the fact, checked against enumeration (8 hidden)
    assert abs(again["ais_minus_exact"]) < 1.0 and (run_dir / "ais-best-16x200.json").is_file()


def test_rbm_bad_settings_are_one_line_errors(nnrun_main):
    assert_one_line_error(nnrun_main("train", "conf=rbm_mnist", "trainer.k=0"), "trainer.k")
    assert_one_line_error(nnrun_main("train", "conf=rbm_mnist", "model.visible=poisson"), "model.visible")


# --------------------------------------------------------------------------- stochastic Hopfield


def test_gibbs_sampling_matches_the_exact_boltzmann_distribution():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4)).astype(np.float32)
    w = np.triu(a, 1)
    params = H.HopfieldParams(jnp.asarray(w + w.T), jnp.asarray(rng.normal(size=4).astype(np.float32)))
    states, exact = B.boltzmann_distribution(params, temperature=1.5)
    samples = B.sample_equilibrium(params, jnp.zeros((64, 4)), jax.random.key(1), 1.5, 200, 20)
    codes = np.asarray(samples).reshape(-1, 4) @ (2 ** np.arange(4))
    empirical = np.bincount(codes.astype(int), minlength=16) / codes.size
    assert 0.5 * np.abs(empirical - exact).sum() < 0.03


def test_annealing_escapes_a_spurious_state_the_deterministic_rule_keeps():
    from experiments.data.patterns import PatternsConfig, load_letters

    x = load_letters(PatternsConfig(size=10)).train.x
    params = H.store(x)
    stuck = B.find_stuck_state(params, x, jax.random.key(0))
    assert stuck is not None
    # deterministic: a fixed point that is no stored pattern
    np.testing.assert_array_equal(np.asarray(H.sync_step(params, stuck)), stuck)
    assert not (x == stuck).all(1).any()
    temps = jnp.asarray(B.temperatures(0.2, 0.01, 100) * x.shape[1])
    final, energies = B.anneal(params, jnp.asarray(np.repeat(stuck[None], 16, 0)), jax.random.key(1), temps)
    stored = (np.asarray(final)[:, None, :] == x[None]).all(-1).any(-1)
    assert stored.mean() >= 0.75  # measured 30 of 32 chains: into the deepest pattern ('H')
    assert float(H.energy(params, jnp.asarray(final)).mean()) < float(H.energy(params, stuck))


def test_temperatures_and_schedules_validate():
    t = B.temperatures(2.0, 0.1, 5)
    assert t[0] == pytest.approx(2.0) and t[-1] == pytest.approx(0.1) and (np.diff(t) < 0).all()
    for bad in (0.0, -1.0):
        with pytest.raises(UserError, match="temperature <= 0"):
            B.StochasticHopfieldConfig(temperature=bad)
    with pytest.raises(UserError, match="schedule"):
        B.temperatures(1.0, 0.1, 5, "cubic")


def test_zero_temperature_is_a_one_line_cli_error(nnrun_main):
    assert_one_line_error(nnrun_main("train", "conf=boltzmann_annealing", "model.t_end=0"), "model.t_end=0", "> 0")


# --------------------------------------------------------------------------- Boltzmann machine


def _encoder_machine(restarts: int = 1):
    from experiments.training.boltzmann import BoltzmannSteps, BoltzmannTrainerConfig

    mask = B.connectivity([4, 4], 2)
    patterns = np.concatenate([np.eye(4), np.eye(4)], 1).astype(np.float32)
    return BoltzmannSteps(B.BoltzmannMachine(8, 2, mask, 0.1, 2), optax.sgd(0.5, momentum=0.5),
                          BoltzmannTrainerConfig(restarts=restarts), patterns)


def test_connectivity_of_the_4_2_4_encoder():
    m = B.connectivity([4, 4], 2)
    assert m.shape == (10, 10) and (m == m.T).all() and not m.diagonal().any()
    assert not m[:4, 4:8].any()  # no input-output connections: the code must pass the hidden units
    assert m[:8, 8:].all() and m[:4, :4].sum() == 12 and m[8, 9] == 1


@pytest.mark.slow  # MNIST, compilation of long chains: past the default suite's budget
def test_sampled_statistics_agree_with_exact_enumeration():
    steps = _encoder_machine()
    m = steps.machine
    p = m.init(jax.random.key(0))
    p = B.BMParams(p.W * 5, jnp.linspace(-1, 1, 10))
    v = jnp.asarray(np.concatenate([np.eye(4), np.eye(4)], 1), jnp.float32)
    ss_free, s_free = m.exact_free(p)
    ss_samp, s_samp = m.sampled(p, jax.random.key(1), None, 256, 40, 10)
    np.testing.assert_allclose(ss_samp, ss_free, atol=0.04)
    ss_clamp, _ = m.exact_clamped(p, v)
    ss_cs, _ = m.sampled(p, jax.random.key(2), v, 64, 40, 10)
    np.testing.assert_allclose(ss_cs, ss_clamp, atol=0.04)
    # clamped visible units keep their values
    np.testing.assert_allclose(np.diag(ss_cs)[:8], np.asarray(v).mean(0), atol=1e-6)


def _train_encoder(steps, key: int, updates: int = 600):
    from experiments.training import Streams

    v = jnp.asarray(np.concatenate([np.eye(4), np.eye(4)], 1), jnp.float32)
    state = steps.init(jax.random.key(key), {"x": v})
    first = steps.eval_step(state, {"x": v})

    @jax.jit
    def train(state):  # the updates as one program
        def body(s, i):
            return steps.train_step(s, {"x": v}, Streams(jax.random.fold_in(jax.random.key(0), i)))[0], None

        return jax.lax.scan(body, state, jnp.arange(updates))[0]

    state = train(state)
    return first, state, steps.eval_step(state, {"x": v})


def test_boltzmann_rule_learns_the_4_2_4_encoder_with_exact_statistics():
    steps = _encoder_machine(restarts=8)
    first, state, sums = _train_encoder(steps, key=2)
    assert float(sums["correct"]) == 4.0  # every input reproduced on the output group
    assert float(sums["kl"]) < 0.3 * float(first["kl"])
    # the reported machine is the restart with the lowest G, and G differs between restarts
    v = jnp.asarray(steps.patterns)
    g = np.array([-float(jnp.mean(steps.log_marginal(jax.tree.map(lambda a: a[r], state.params), v)))
                  for r in range(8)])
    assert int(state.best) == int(np.argmin(g)) and g.max() - g.min() > 0.05
    assert float(sums["kl"] / sums["weight"]) == pytest.approx(g.min() - np.log(4), abs=1e-4)
