"""Tests of the binary Hopfield network (experiments.models.hopfield) and the pattern
datasets (experiments.data.patterns). Deterministic: every random draw is seeded."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.data import load_dataset
from experiments.data.patterns import GLYPHS, BinaryDigitsConfig, PatternsConfig, glyph, load_binary_digits, load_letters
from experiments.errors import UserError
from experiments.models import MODELS, DataInfo, build_model
from experiments.models import hopfield as H


@pytest.fixture(scope="module")
def letters():
    ds = load_letters(PatternsConfig())
    x = jnp.asarray(ds.train.x)
    return ds, x, H.store(x)


def _random_networks(n_units: int, cases: int, seed: int, integer: bool):
    """Random symmetric W with zero diagonal, random theta and random {0,1} states.

    Integer-valued W with integer/half-integer theta makes exact ties (field == theta)
    common, which is where a wrong tie-break would show up as an energy increase.
    """
    rng = np.random.default_rng(seed)
    if integer:
        a = rng.integers(-3, 4, size=(cases, n_units, n_units)).astype(np.float32)
        theta = rng.integers(-6, 7, size=(cases, n_units)).astype(np.float32) / 2
    else:
        a = rng.normal(size=(cases, n_units, n_units)).astype(np.float32)
        theta = rng.normal(size=(cases, n_units)).astype(np.float32)
    w = np.triu(a, 1)
    w = w + np.swapaxes(w, 1, 2)
    states = rng.integers(0, 2, size=(cases, n_units)).astype(np.float32)
    return H.HopfieldParams(jnp.asarray(w), jnp.asarray(theta)), jnp.asarray(states)


# --------------------------------------------------------------------------- energy


# One compiled check per state size: the trajectory (energy after every single-unit
# update), the plain sweep and the start energy, vmapped over random networks.
_sweep_check = jax.jit(
    jax.vmap(lambda p, n, k: (H.energy(p, n), H.async_trajectory(p, n, k), H.async_sweep(p, n, k)))
)


@pytest.mark.parametrize("n_units,integer", [(9, True), (9, False), (24, True), (24, False)])
def test_energy_never_increases_after_any_single_unit_update(n_units, integer):
    cases, sweeps = 16, 3  # 4 x 16 = 64 random networks, 3 sweeps each
    params, n = _random_networks(n_units, cases, seed=1000 + n_units + integer, integer=integer)
    key = jax.random.key(n_units)
    decreased = 0
    for _ in range(sweeps):
        key, sub = jax.random.split(key)
        e0, (final, order, energies), swept = _sweep_check(params, n, jax.random.split(sub, cases))
        path = np.concatenate([np.asarray(e0)[:, None], np.asarray(energies)], axis=1)
        steps = np.diff(path, axis=1)
        tol = 1e-5 * (1.0 + np.abs(path[:, :-1]))
        assert (steps <= tol).all(), f"energy rose by {steps.max()} in one update"
        decreased += int((steps < -tol).sum())
        # Each sweep visits every unit exactly once, and is the same sweep as async_sweep.
        assert (np.sort(np.asarray(order), axis=1) == np.arange(n_units)).all()
        np.testing.assert_array_equal(final, swept)
        n = final
    assert decreased > 0  # the property was exercised, not vacuously true


def test_energy_formula_and_batching():
    params, n = _random_networks(5, 3, seed=7, integer=False)
    p0 = H.HopfieldParams(params.W[0], params.theta[0])
    w, th, x = np.asarray(p0.W), np.asarray(p0.theta), np.asarray(n)
    expected = -0.5 * np.einsum("bi,ij,bj->b", x, w, x) + x @ th
    np.testing.assert_allclose(H.energy(p0, n), expected, rtol=1e-6)
    np.testing.assert_allclose(H.energy(p0, n[1]), expected[1], rtol=1e-6)


# --------------------------------------------------------------------------- storage


def test_hebbian_weights_symmetric_zero_diagonal_and_theta():
    rng = np.random.default_rng(3)
    pats = rng.integers(0, 2, size=(5, 40)).astype(np.float32)
    params = H.store(pats)
    w, theta = np.asarray(params.W), np.asarray(params.theta)
    s = 2 * pats - 1
    expected = s.T @ s
    np.fill_diagonal(expected, 0)
    np.testing.assert_array_equal(w, expected)
    np.testing.assert_array_equal(w, w.T)
    assert (np.diag(w) == 0).all()
    np.testing.assert_array_equal(theta, 0.5 * w.sum(axis=1))
    # The 0/1 rule with this theta is the bipolar sign rule, ties (field 0) going to +1.
    states = rng.integers(0, 2, size=(50, 40)).astype(np.float32)
    bipolar = ((2 * states - 1) @ w.T >= 0).astype(np.float32)
    np.testing.assert_array_equal(H.sync_step(params, states), bipolar)


def test_params_are_a_pytree_of_two_arrays(letters):
    _, _, params = letters
    leaves = jax.tree_util.tree_leaves(params)
    assert len(leaves) == 2 and all(isinstance(x, jax.Array) for x in leaves)


def test_stored_letters_are_fixed_points(letters):
    _, x, params = letters
    np.testing.assert_array_equal(H.sync_step(params, x), x)
    for seed in range(3):
        np.testing.assert_array_equal(H.async_sweep(params, x[0], jax.random.key(seed)), x[0])
    probes = jnp.tile(x, (4, 1))  # 16 probes: the batch shape the other recall tests compile
    for mode in H.MODES:
        final, sweeps, converged = H.recall(params, probes, jax.random.key(0), mode)
        np.testing.assert_array_equal(final, probes)
        assert (np.asarray(sweeps) == 0).all() and np.asarray(converged).all()


def test_default_digits_are_fixed_points():
    ds = load_binary_digits(BinaryDigitsConfig())
    x = jnp.asarray(ds.train.x)
    assert x.shape == (3, 100) and ds.meta["image_shape"] == (10, 10) and ds.meta["names"] == ["0", "1", "4"]
    assert set(np.unique(ds.train.x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(H.sync_step(H.store(x), x), x)


# --------------------------------------------------------------------------- tie-break


def _tied_networks(n_units: int, cases: int, seed: int):
    """Random integer networks and states in which about half the units have a field that
    equals their threshold exactly (theta_i = sum_j w_ij n_j), the others a field half a
    unit away on either side. A tie changes no energy, so only a direct reference of the
    rule (n_i <- 1 if theta_i <= field) can tell `<=` from `<`."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-3, 4, size=(cases, n_units, n_units)).astype(np.float32)
    w = np.triu(a, 1)
    w = w + np.swapaxes(w, 1, 2)
    n = rng.integers(0, 2, size=(cases, n_units)).astype(np.float32)
    h = np.einsum("cij,cj->ci", w, n)
    tie = rng.random((cases, n_units)) < 0.5
    theta = np.where(tie, h, h + rng.choice([-0.5, 0.5], size=(cases, n_units))).astype(np.float32)
    return w, theta, n, tie


def _reference_unit(w, theta, n, i):
    m = n.copy()
    m[i] = 1.0 if theta[i] <= w[i] @ n else 0.0
    return m


def test_ties_go_to_one_in_single_unit_updates_and_sync_steps():
    w, theta, n, tie = _tied_networks(12, 8, seed=14)
    assert (tie & (n == 0)).sum() >= 8  # tied units that are off: a wrong tie-break would leave them off
    for c in range(len(w)):
        params = H.HopfieldParams(jnp.asarray(w[c]), jnp.asarray(theta[c]))
        expected_sync = (theta[c] <= w[c] @ n[c]).astype(np.float32)
        assert (expected_sync[tie[c]] == 1).all()
        np.testing.assert_array_equal(H.sync_step(params, n[c]), expected_sync)
        for i in range(w.shape[1]):
            np.testing.assert_array_equal(H.update_unit(params, jnp.asarray(n[c]), i),
                                          _reference_unit(w[c], theta[c], n[c], i), err_msg=f"case {c}, unit {i}")
    batch = H.sync_step(H.HopfieldParams(jnp.asarray(w[0]), jnp.asarray(theta[0])), jnp.asarray(n[:3]))
    np.testing.assert_array_equal(batch, (theta[0] <= n[:3] @ w[0].T).astype(np.float32))


def test_ties_in_an_async_sweep_and_in_recall_follow_the_reference():
    """A whole sweep, unit after unit in the sweep's own order, against the reference rule;
    then recall (both modes) against the reference dynamics run to their end."""
    w, theta, n, tie = _tied_networks(10, 6, seed=41)
    ties_met = 0
    for c in range(len(w)):
        params = H.HopfieldParams(jnp.asarray(w[c]), jnp.asarray(theta[c]))
        final, order, _ = H.async_trajectory(params, jnp.asarray(n[c]), jax.random.key(c))
        m = n[c].copy()
        for i in np.asarray(order):
            ties_met += int(theta[c][i] == w[c][i] @ m)
            m = _reference_unit(w[c], theta[c], m, i)
        np.testing.assert_array_equal(final, m, err_msg=f"case {c}")
        # synchronous recall: iterate the reference step to a fixed point, or to a 2-cycle
        # (recall stops on the state that repeats the one two steps back)
        prev, cur = None, n[c].copy()
        for _ in range(100):
            new = (theta[c] <= w[c] @ cur).astype(np.float32)
            if (new == cur).all():
                break
            if prev is not None and (new == prev).all():
                cur = new
                break
            prev, cur = cur, new
        got, _, _ = H.recall(params, jnp.asarray(n[c]), jax.random.key(0), "sync", max_sweeps=100)
        np.testing.assert_array_equal(got, cur, err_msg=f"case {c} (sync recall)")
    assert ties_met >= 6  # ties were met along the way, not only in the starting states


def test_hebbian_ties_follow_the_bipolar_sign_rule():
    """An even number of stored bipolar patterns makes fields of exactly 0 possible (with an
    odd number they never are): those units must come out +1 (state 1), as in s = sign(Ws)
    with sign(0) = +1."""
    rng = np.random.default_rng(7)
    pats = rng.integers(0, 2, size=(2, 16)).astype(np.float32)
    params = H.store(pats)
    w = np.asarray(params.W)
    states = rng.integers(0, 2, size=(64, 16)).astype(np.float32)
    field = (2 * states - 1) @ w.T
    assert (field == 0).sum() >= 64  # plenty of ties
    np.testing.assert_array_equal(H.sync_step(params, states), (field >= 0).astype(np.float32))
    for k in range(8):
        for i in range(16):
            expected = states[k].copy()
            expected[i] = 1.0 if field[k, i] >= 0 else 0.0
            np.testing.assert_array_equal(H.update_unit(params, jnp.asarray(states[k]), i), expected)


# --------------------------------------------------------------------------- recall


def _half_noise_probes(pattern: jax.Array, image_shape, seeds: int) -> jax.Array:
    keys = jax.random.split(jax.random.key(2024), seeds)
    return jax.vmap(lambda k: H.corrupt_half(pattern, k, image_shape))(keys)


@pytest.mark.parametrize("mode", H.MODES)
def test_T_recovered_exactly_from_half_noise(letters, mode):
    ds, x, params = letters
    t = x[ds.meta["names"].index("T")]
    probes = _half_noise_probes(t, ds.meta["image_shape"], seeds=16)
    assert (np.asarray(probes) != np.asarray(t)).any(axis=1).all()  # every probe is corrupted
    final, sweeps, converged = H.recall(params, probes, jax.random.key(5), mode)
    np.testing.assert_array_equal(final, jnp.broadcast_to(t, final.shape))
    assert np.asarray(converged).all() and (np.asarray(sweeps) >= 1).all()


def test_single_probe_recall_matches_batch_shape(letters):
    ds, x, params = letters
    probe = _half_noise_probes(x[0], ds.meta["image_shape"], seeds=1)[0]
    final, sweeps, converged = H.recall(params, probe, jax.random.key(0), "async")
    assert final.shape == x[0].shape and sweeps.shape == () and converged.shape == ()
    np.testing.assert_array_equal(final, x[0])


def test_sync_two_cycle_is_detected_and_reported_not_converged():
    # Two mutually inhibiting units that both fire at zero input: (0,0) <-> (1,1).
    params = H.HopfieldParams(jnp.array([[0.0, -1.0], [-1.0, 0.0]]), jnp.array([-0.5, -0.5]))
    n0 = jnp.zeros(2)
    final, steps, converged = H.recall(params, n0, jax.random.key(0), "sync", max_sweeps=50)
    assert not bool(converged) and int(steps) == 2  # stopped at the cycle, not at max_sweeps
    # Asynchronous updates of the same network settle (one unit on, one off).
    final, _, converged = H.recall(params, n0, jax.random.key(0), "async", max_sweeps=50)
    assert bool(converged) and float(final.sum()) == 1.0


def test_max_sweeps_exhausted_reports_not_converged(letters):
    ds, x, params = letters
    probe = _half_noise_probes(x[0], ds.meta["image_shape"], seeds=1)[0]
    _, sweeps, converged = H.recall(params, probe, jax.random.key(0), "async", max_sweeps=1)
    assert int(sweeps) == 1 and not bool(converged)


def test_unknown_mode_is_a_user_error(letters):
    _, x, params = letters
    with pytest.raises(UserError, match="async, sync"):
        H.recall(params, x, jax.random.key(0), "gibbs")


# --------------------------------------------------------------------------- corruption


def test_corrupt_half_only_touches_bottom_rows():
    shape = (6, 5)
    pattern = jnp.zeros(30)
    changed = np.zeros(30, dtype=bool)
    for seed in range(8):
        changed |= np.asarray(H.corrupt_half(pattern, jax.random.key(seed), shape)) != 0
    rows = np.arange(30) // 5
    assert not changed[rows < 3].any() and changed[rows >= 3].all()


def test_corrupt_noise_levels():
    pattern = jnp.asarray(np.random.default_rng(0).integers(0, 2, 1000).astype(np.float32))
    key = jax.random.key(1)
    np.testing.assert_array_equal(H.corrupt_noise(pattern, key, 0.0), pattern)
    np.testing.assert_array_equal(H.corrupt_noise(pattern, key, 1.0), 1 - pattern)
    flipped = float((H.corrupt_noise(pattern, key, 0.2) != pattern).mean())
    assert 0.15 < flipped < 0.25


# --------------------------------------------------------------------------- evaluation


def test_evaluate_recall_structure_and_values(letters):
    ds, x, params = letters
    levels = (0.0, 0.1, 0.5)
    # trials=1: 4 conditions x 4 letters = 16 probes, the batch the other tests compile.
    out = H.evaluate_recall(params, x, ds.meta["image_shape"], jax.random.key(0), "async", levels, trials=1)
    metrics = {"bit_accuracy", "exact_recall", "mean_sweeps", "converged"}
    assert set(out["half"]) == metrics
    assert list(out["noise"]) == ["0.0", "0.1", "0.5"]
    assert all(set(d) == metrics for d in out["noise"].values())
    assert out["summary"]["half.exact_recall"] == out["half"]["exact_recall"]
    assert out["summary"]["noise.0.1.bit_accuracy"] == out["noise"]["0.1"]["bit_accuracy"]
    assert len(out["summary"]) == 4 * (1 + len(levels))
    assert all(type(v) is float for v in out["summary"].values())
    assert out["noise"]["0.0"] == {"bit_accuracy": 1.0, "exact_recall": 1.0, "mean_sweeps": 0.0, "converged": 1.0}
    assert out["noise"]["0.1"]["exact_recall"] == 1.0
    assert out["half"]["bit_accuracy"] > 0.95
    for d in [out["half"], *out["noise"].values()]:
        assert 0.0 <= d["exact_recall"] <= d["bit_accuracy"] <= 1.0 and 0.0 <= d["converged"] <= 1.0


# --------------------------------------------------------------------------- registries


def test_unknown_letter_is_a_user_error_listing_available():
    with pytest.raises(UserError) as err:
        load_letters(PatternsConfig(patterns=["T", "Q"]))
    assert "'Q'" in str(err.value) and all(c in str(err.value) for c in GLYPHS)


def test_letters_dataset_layout():
    ds = load_dataset(PatternsConfig(patterns=["T", "L"], size=10))
    assert ds.train.x.shape == (2, 100) and ds.train.x.dtype == np.float32
    np.testing.assert_array_equal(ds.train.y, np.arange(2, dtype=np.int32))
    np.testing.assert_array_equal(ds.test.x, ds.train.x)
    assert ds.val is None and ds.num_classes == 2
    assert ds.meta == {"image_shape": (10, 10), "names": ["T", "L"]}
    np.testing.assert_array_equal(glyph("T", 20)[::2, ::2], glyph("T"))


def test_model_registration_and_builder_validation():
    entry = MODELS.get("hopfield")
    assert entry.trainer == "hebbian" and entry.schema is H.HopfieldConfig
    model = build_model(H.HopfieldConfig(update="sync"), DataInfo(input_shape=(400,), num_classes=4))
    assert model.num_units == 400 and model.cfg.update == "sync"
    with pytest.raises(UserError, match="update mode"):
        build_model(H.HopfieldConfig(update="parallel"), DataInfo(input_shape=(400,), num_classes=4))


# --------------------------------------------------------------------------- capacity, Storkey, data


def _random_set(p: int, n: int, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random((p, n)) < 0.5).astype(np.float32)


def test_storkey_stores_more_fixed_points_than_hebbian_at_015n():
    heb = [H.fixed_point_rate(H.store(_random_set(15, 100, s)), _random_set(15, 100, s)) for s in range(3)]
    sto = [H.fixed_point_rate(H.store_storkey(_random_set(15, 100, s)), _random_set(15, 100, s)) for s in range(3)]
    assert np.mean(sto) == 1.0 and np.mean(heb) < 0.95
    w = np.asarray(H.store_storkey(_random_set(15, 100, 0)).W)
    np.testing.assert_allclose(w, w.T, atol=1e-6)
    assert not w.diagonal().any()


def test_hebbian_fixed_points_at_005n_and_basin_at_010n():
    pats = _random_set(5, 100, 0)
    assert H.fixed_point_rate(H.store(pats), pats) == 1.0
    pats = _random_set(10, 100, 1)
    params = H.store(pats)
    report = H.flip_report(lambda pr, k: H.recall(params, pr, k, "sync", 30), pats, jax.random.key(0), (0.1,), 4)
    assert report["flip.0.1.overlap"] >= 0.95


def test_corrupt_bits_flips_exactly_the_requested_count():
    x = jnp.zeros(100)
    flipped = jax.vmap(lambda k: H.corrupt_bits(x, k, 10))(jax.random.split(jax.random.key(0), 8))
    assert (np.asarray(flipped).sum(1) == 10).all()
    assert H.flipped_count(0.1, 100) == 10 and H.flipped_count(0.0, 100) == 0


def test_classify_states_names_retrieved_reversed_mixture_and_spurious():
    pats = _random_set(4, 101, 3)
    xi = 2 * pats - 1
    mix = (xi[0] + xi[1] - xi[2] > 0).astype(np.float32)
    spurious = _random_set(1, 101, 99)[0]
    final = np.stack([pats[0], 1 - pats[1], mix, spurious, pats[2]])
    src = np.stack([pats[0], pats[0], pats[0], pats[0], pats[0]])
    c = H.classify_states(final, src, pats)
    assert c["retrieved"].tolist() == [True, False, False, False, False]
    assert c["reversed"].tolist() == [False, True, False, False, False]
    assert c["mixture"].tolist() == [False, False, True, False, False]
    assert c["spurious"].tolist() == [False, False, False, True, False]
    assert c["other"].tolist() == [False, False, False, False, True]
    assert c["overlap"][0] == 1.0


def test_energy_trace_never_rises_and_restores_the_t():
    ds = load_letters(PatternsConfig())
    params = H.store(ds.train.x)
    probe = H.corrupt_half(ds.train.x[0], jax.random.key(1), ds.meta["image_shape"])
    states, energies = H.energy_trace(params, probe, jax.random.key(2))
    assert (np.diff(energies) <= 1e-3).all() and energies[-1] < energies[0]
    np.testing.assert_array_equal(states[-1], ds.train.x[0])
    assert len(states) == len(energies)


def test_dense_memory_recalls_as_many_patterns_as_units():
    from experiments.models import dense_memory as D

    pats = _random_set(64, 64, 4)
    params = D.store_dense(pats)
    assert D.fixed_points(params, pats, 1.0) == 1.0
    report = H.flip_report(lambda pr, k: D.dense_recall(params, pr, 1.0, 20), pats, jax.random.key(0), (0.1,), 2)
    assert report["flip.0.1.exact_recall"] == 1.0
    heb = H.store(pats)  # the Hebbian net at P = N keeps almost nothing
    assert H.fixed_point_rate(heb, pats) < 0.2


def test_random_patterns_dataset_is_seeded_and_biased():
    from experiments.data.random_patterns import RandomPatternsConfig, load_random_patterns

    a = load_random_patterns(RandomPatternsConfig(N=100, P=20, seed=1))
    b = load_random_patterns(RandomPatternsConfig(N=100, P=20, seed=1))
    np.testing.assert_array_equal(a.train.x, b.train.x)
    assert a.train.x.shape == (20, 100) and a.meta["image_shape"] == (10, 10)
    on = load_random_patterns(RandomPatternsConfig(N=400, P=50, bias=0.6)).train.x.mean()
    assert abs(on - 0.8) < 0.02
    with pytest.raises(UserError, match="bias"):
        RandomPatternsConfig(bias=1.0)


def test_too_many_patterns_for_memory_is_one_line(nnrun_main, monkeypatch):
    from conftest import assert_one_line_error
    from experiments.data import random_patterns

    monkeypatch.setattr(random_patterns, "available_memory", lambda: 1 << 20)
    out = nnrun_main("train", "conf=hopfield_capacity", "data.N=1000", "data.P=500")
    assert_one_line_error(out, "data.P=500", "GiB", "lower data.P")


@pytest.mark.parametrize("content,fragments", [
    ("0 1 1\n1 0 2\n", ("values [2.0]", "0/1")),
    ("0 1 1\n1 0\n", ("different sizes", "line 2")),
    ("0 1 x\n", ("not a row of numbers",)),
])
def test_bad_pattern_files_are_one_line_errors(nnrun_main, tmp_path, content, fragments):
    from conftest import assert_one_line_error

    path = tmp_path / "pats.txt"
    path.write_text(content)
    out = nnrun_main("train", "conf=hopfield_capacity", "data=pattern_file", f"data.path={path}")
    assert_one_line_error(out, *fragments)


def test_pattern_file_reads_bipolar_and_bitstring_rows(tmp_path):
    from experiments.data.patterns import PatternFileConfig, load_pattern_file

    (tmp_path / "a.txt").write_text("# two patterns\n-1 1 1 -1\n1,-1,-1,-1\n")
    ds = load_pattern_file(PatternFileConfig(path=str(tmp_path / "a.txt")))
    np.testing.assert_array_equal(ds.train.x, [[0, 1, 1, 0], [1, 0, 0, 0]])
    (tmp_path / "b.txt").write_text("0110\n1001\n")
    assert load_pattern_file(PatternFileConfig(path=str(tmp_path / "b.txt"))).meta["image_shape"] == (2, 2)
    np.save(tmp_path / "c.npy", np.eye(3))
    assert load_pattern_file(PatternFileConfig(path=str(tmp_path / "c.npy"))).train.x.shape == (3, 3)


@pytest.mark.slow  # compiles recall for several pattern counts
def test_capacity_and_basin_curves_report_every_load_and_flip():
    from experiments.energy.capacity import basin_curve, capacity_curve, dense_memory, hopfield_memory

    rows = capacity_curve(hopfield_memory("hebbian"), 40, (0.05, 0.5), seeds=(0,), probes=8)
    assert [r["P"] for r in rows] == [2, 20] and rows[0]["0.0.overlap"] == 1.0
    assert rows[1]["0.0.overlap"] < rows[0]["0.0.overlap"]  # far over capacity, the patterns are lost
    basin = basin_curve(dense_memory(1.0), 40, 40, (0.0, 0.1), seeds=(0,), probes=8)
    assert [b["flip"] for b in basin] == [0.0, 0.1] and basin[0]["exact_recall"] == 1.0


def test_alpha_sets_the_pattern_count_from_the_load():
    from experiments.data.random_patterns import RandomPatternsConfig

    assert RandomPatternsConfig(N=200, alpha=0.138).P == 28 and RandomPatternsConfig(N=10, alpha=0.01).P == 1
    with pytest.raises(UserError, match="data.alpha"):
        RandomPatternsConfig(alpha=0.0)


def test_capacity_sweep_reports_recall_per_load_and_draws_the_0138_line(nnrun_main, outputs):
    """The capacity study as `nnrun sweep`: each trial's metric is the overlap after recall
    from 10% flipped bits, ranked across loads, with the sweep's plot and its reference line."""
    import csv
    import json

    sweep_dir = outputs / "capacity"
    out = nnrun_main("sweep", "conf=hopfield_capacity", "sweep=hopfield_capacity", "data.N=64",
                     "data.alpha=0.05,0.4", f"hydra.sweep.dir={sweep_dir}")
    assert out.code == 0, out.err
    rows = {float(r["data.alpha"]): r for r in csv.DictReader((sweep_dir / "results.csv").open())}
    assert set(rows) == {0.05, 0.4}
    low, high = (float(rows[a]["test.flip.0.1.overlap"]) for a in (0.05, 0.4))
    assert low > 0.95 and high < 0.9  # retrieval below the capacity, lost far above it
    trial = json.loads(next(sweep_dir.glob("*/summary.json")).read_text())
    assert trial["patterns"] in (3, 26) and "flip.0.1.exact_recall" in trial["test"]
    assert (sweep_dir / "plots" / "metric_vs_data.alpha.png").is_file()
    spec = json.loads((sweep_dir / "sweep.json").read_text())["spec"]
    assert spec["marks"] == [{"param": "data.alpha", "at": 0.138, "label": "0.138 (Amit, Gutfreund & Sompolinsky 1985)"}]


def test_bad_sweep_marks_are_one_line_errors():
    from experiments.sweep.spec import marks

    assert marks([{"param": "data.alpha", "at": 1}]) == [{"param": "data.alpha", "at": 1.0, "label": ""}]
    for bad in ({"param": "x"}, [{"param": "x", "at": "high"}], [{"param": "x", "at": 1, "colour": "red"}]):
        with pytest.raises(UserError, match="marks"):
            marks(bad)
