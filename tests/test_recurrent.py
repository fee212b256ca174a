"""Recurrent networks (experiments/models/rnn.py): the cells against Flax's own, masks
(padding never changes a result), truncated BPTT's carried state, per-layer gradient norms,
the adding problem's data, and each structure trained a few steps through the CLI."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from conftest import assert_one_line_error, read_json, read_metrics
from experiments.data.adding import AddingConfig, BASELINE_MSE, load as load_adding
from experiments.data.streams import StreamWindows
from experiments.models import DataInfo, build_model
from experiments.models.rnn import RNNConfig
from experiments.objectives.sequence import SequenceConfig, build as build_sequence
from experiments.training.gradient import GradNorms


def _net(info: DataInfo, **cfg):
    model = build_model(RNNConfig(**cfg), info)
    return model


@pytest.mark.parametrize("cell", [pytest.param("simple", marks=pytest.mark.slow), "lstm", "gru"])
def test_padding_never_changes_a_result(cell):
    """Stacked, bidirectional, both structures: a batch padded to more steps (mask 0 there)
    gives bit-identical outputs on the real steps and the same masked loss."""
    rng = np.random.default_rng(0)
    lengths = np.array([5, 3, 7])
    x = rng.normal(size=(3, 7, 4)).astype(np.float32) * (np.arange(7)[None, :, None] < lengths[:, None, None])
    mask = (np.arange(7)[None, :] < lengths[:, None]).astype(np.float32)
    padded_x = np.concatenate([x, rng.normal(size=(3, 5, 4)).astype(np.float32)], 1)  # garbage in the padding
    padded_mask = np.concatenate([mask, np.zeros((3, 5), np.float32)], 1)
    for structure, info in (("seq2vec", DataInfo((7, 4), 3)), ("seq2seq", DataInfo((7, 4), 3, target_shape=(7,)))):
        model = _net(info, cell=cell, hidden=6, layers=2, bidirectional=True, structure=structure)
        variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(x), mask=jnp.asarray(mask))
        short = np.asarray(model.apply(variables, x, mask=mask))
        long = np.asarray(model.apply(variables, padded_x, mask=padded_mask))
        if structure == "seq2vec":
            np.testing.assert_array_equal(short, long)
            continue
        np.testing.assert_array_equal(short * mask[..., None], long[:, :7] * mask[..., None])
        objective = build_sequence(SequenceConfig(target="classes"))
        y = rng.integers(0, 3, (3, 7))
        s_short = objective.sums(jnp.asarray(short), {"y": y, "mask": mask})
        s_long = objective.sums(jnp.asarray(long), {"y": np.pad(y, ((0, 0), (0, 5))), "mask": padded_mask})
        assert float(s_short["loss"]) == float(s_long["loss"]) and float(s_short["weight"]) == 15.0


def test_a_masked_sequence_scores_as_that_sequence_alone():
    model = _net(DataInfo((6, 2), 4), cell="lstm", hidden=5)
    x = np.random.default_rng(1).normal(size=(2, 6, 2)).astype(np.float32)
    variables = jax.jit(model.init)(jax.random.key(0), jnp.asarray(x))
    masked = model.apply(variables, x, mask=np.array([[1, 1, 1, 0, 0, 0], [1] * 6], np.float32))
    np.testing.assert_allclose(masked[0], model.apply(variables, x[:1, :3])[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(model.apply(variables, x, lengths=np.array([3, 6])), masked)


def _copy_flax(kind: str, w: dict, hidden: int) -> dict:
    """Our fused weights as the parameters of Flax's cell of the same kind."""
    split = lambda a: jnp.split(a, 4 if kind == "lstm" else 3, axis=-1)  # noqa: E731
    ik, ib, hk = split(w["i"]["kernel"]), split(w["i"]["bias"]), split(w["h"]["kernel"])
    if kind == "lstm":  # Flax: input Dense without bias, hidden Dense with it
        return {**{f"i{g}": {"kernel": ik[n]} for n, g in enumerate("ifgo")},
                **{f"h{g}": {"kernel": hk[n], "bias": ib[n]} for n, g in enumerate("ifgo")}}
    return {**{f"i{g}": {"kernel": ik[n], "bias": ib[n]} for n, g in enumerate("rzn")},
            "hr": {"kernel": hk[0]}, "hz": {"kernel": hk[1]}, "hn": {"kernel": hk[2], "bias": w["h"]["bias"]}}


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_fused_hoisted_cells_compute_what_flaxs_cells_do(kind):
    model = _net(DataInfo((5, 3), target_shape=(5, 1)), cell=kind, hidden=4, structure="seq2seq")
    x = jax.random.normal(jax.random.key(1), (2, 5, 3))
    variables = jax.jit(model.init)(jax.random.key(0), x)
    w = variables["params"]["R1"]["fwd"]
    cell = nn.LSTMCell(4) if kind == "lstm" else nn.GRUCell(4)
    ours = nn.RNN(cell).apply({"params": {"cell": _copy_flax(kind, w, 4)}}, x)
    out = variables["params"]["Out"]["dense"]
    np.testing.assert_allclose(model.apply(variables, x), ours @ out["kernel"] + out["bias"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_the_hand_written_backward_pass_matches_autodiff_of_flaxs_cells(kind):
    """The layer's custom VJP against jax.grad through nn.RNN(Flax cell): gradients of the
    weights and of the inputs, with padding, so the masked steps are checked too."""
    model = _net(DataInfo((5, 3), target_shape=(5, 1)), cell=kind, hidden=4, structure="seq2seq")
    x = jax.random.normal(jax.random.key(1), (2, 5, 3))
    mask = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], jnp.float32)
    variables = jax.jit(model.init)(jax.random.key(0), x)
    out = variables["params"]["Out"]["dense"]
    cell = nn.LSTMCell(4) if kind == "lstm" else nn.GRUCell(4)

    def ours(w, x):
        params = {**variables["params"], "R1": {"fwd": w}}
        return jnp.sum(jnp.sin(model.apply({"params": params}, x, mask=mask)))

    def flax(w, x):
        y = nn.RNN(cell).apply({"params": {"cell": _copy_flax(kind, w, 4)}}, x, seq_lengths=jnp.array([5, 3]))
        y = jnp.where(mask[..., None] > 0, y, 0.0)
        return jnp.sum(jnp.sin((y @ out["kernel"] + out["bias"]) * mask[..., None]))

    w = variables["params"]["R1"]["fwd"]
    got, want = jax.grad(ours, (0, 1))(w, x), jax.grad(flax, (0, 1))(w, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_vec2seq_feeds_each_prediction_back():
    model = _net(DataInfo((2, 1), target_shape=(4, 1)), cell="gru", hidden=3, structure="vec2seq")
    x = jnp.asarray([[[0.5], [-0.2]]])
    variables = jax.jit(model.init)(jax.random.key(0), x)
    y = model.apply(variables, x)
    assert y.shape == (1, 4, 1)
    # generating k+1 steps from the prime x equals priming on (x, y_0..y_{k-1}) and taking one step
    one = _net(DataInfo((2, 1), target_shape=(1, 1)), cell="gru", hidden=3, structure="vec2seq")
    for k in range(1, 4):
        primed = jnp.concatenate([x, y[:, :k]], 1)
        np.testing.assert_allclose(one.apply(variables, primed)[:, 0], y[:, k], rtol=1e-5, atol=1e-6)


def test_vec2seq_needs_value_targets_as_wide_as_the_inputs():
    from experiments.errors import UserError

    with pytest.raises(UserError, match="vec2seq feeds its outputs back"):
        _net(DataInfo((100, 2), target_shape=(1,)), structure="vec2seq")


def test_truncated_bptt_carries_the_state_across_consecutive_windows():
    """Two windows in a row with the carried state = one pass over both; `first` restarts."""
    series = np.random.default_rng(2).normal(size=(2 * 2 * 4 + 1, 1)).astype(np.float32)
    streams = StreamWindows(series, length=4, streams=2)
    assert len(streams) == 4 and not streams.shuffle
    model = _net(DataInfo((4, 1), target_shape=(4, 1)), cell="lstm", hidden=3, structure="seq2seq", carry=True)
    full = _net(DataInfo((8, 1), target_shape=(8, 1)), cell="lstm", hidden=3, structure="seq2seq")
    b0, b1 = (streams.gather(streams.device_arrays(), jnp.arange(2) + 2 * j) for j in range(2))
    assert b0["first"].all() and not b1["first"].any()
    variables = jax.jit(model.init)(jax.random.key(0), b0["x"])
    state = {"carry": variables["carry"]}
    outs = []
    for b in (b0, b1):
        y, state = model.apply({"params": variables["params"], **state}, b["x"], train=True, first=b["first"],
                               mutable=["carry"])
        outs.append(y)
    whole = full.apply({"params": variables["params"]}, jnp.concatenate([b0["x"], b1["x"]], 1))
    np.testing.assert_allclose(jnp.concatenate(outs, 1), whole, rtol=1e-5, atol=1e-6)
    restarted, _ = model.apply({"params": variables["params"], **state}, b0["x"], train=True, first=b0["first"],
                               mutable=["carry"])
    np.testing.assert_allclose(restarted, outs[0], rtol=1e-6, atol=1e-6)


def test_gradient_norms_are_averaged_per_layer_over_the_steps():
    class Mean:
        def finalize(self, s):
            return {"loss": s["loss"] / s["weight"]}

    steps = [GradNorms.of({"R1": {"k": jnp.asarray([3.0, 4.0])}, "Out": {"k": jnp.asarray([1.0])}}),
             GradNorms.of({"R1": {"k": jnp.asarray([0.0, 1.0])}, "Out": {"k": jnp.asarray([3.0])}})]
    sums = {k: float(steps[0][k] + steps[1][k]) for k in steps[0]}
    out = GradNorms(Mean()).finalize({"loss": 4.0, "weight": 2.0, **sums})
    assert out == pytest.approx({"loss": 2.0, "grad_norm_R1": 3.0, "grad_norm_Out": 2.0})
    assert GradNorms(Mean()).finalize({"loss": 1.0, "weight": 1.0}) == {"loss": 1.0}  # evaluation sums


def test_the_adding_problem_is_deterministic_with_two_marks_and_the_baseline():
    a = load_adding(AddingConfig(train_size=4000, val_size=10, test_size=10))
    b = load_adding(AddingConfig(train_size=4000, val_size=10, test_size=20))
    np.testing.assert_array_equal(a.train.x, b.train.x)  # a split's size never changes another split
    x, y = a.train.x, a.train.y
    assert x.shape == (4000, 100, 2) and (x[..., 1].sum(1) == 2).all()
    np.testing.assert_allclose((x[..., 0] * x[..., 1]).sum(1), y[:, 0], rtol=1e-6)
    assert (x[:, :50, 1].sum(1) == 2).all() and (x[:, :10, 1].sum(1) >= 1).all()  # Hochreiter's placement
    halves = load_adding(AddingConfig(train_size=500, val_size=0, test_size=10, marks="halves")).train.x
    assert (halves[:, :50, 1].sum(1) == 1).all() and (halves[:, 50:, 1].sum(1) == 1).all()
    assert abs(float(np.mean((y - 1.0) ** 2)) - BASELINE_MSE) < 0.01
    v = load_adding(AddingConfig(train_size=50, val_size=0, test_size=10, length=20, min_length=8))
    lengths = v.train.arrays["lengths"]
    assert lengths.min() >= 8 and lengths.max() <= 20 and len(set(lengths)) > 3
    real = np.arange(20)[None, :] < lengths[:, None]
    assert (v.train.x[..., 1] * real).sum() == 100 and (v.train.x[..., 0] * ~real).sum() == 0  # marks on real steps


TINY = ["trainer.max_steps=4", "trainer.log_every=2", "trainer.progress=false", "trainer.plots=false",
        "trainer.eval_batch_size=64", "model.hidden=8"]
STRUCTURES = {
    "seq2vec": ["conf=adding_lstm", "data.length=12", "data.min_length=6", "data.train_size=64",
                "data.val_size=16", "data.test_size=16", "trainer.batch_size=16"],
    "seq2seq": ["conf=sine_seq2seq", "model.bidirectional=true", "model.layers=2", "model.dropout=0.1",
                "data.length=10", "data.train_size=64", "data.val_size=16", "data.test_size=16",
                "trainer.batch_size=16"],
    "vec2seq": ["conf=sine_vec2seq", "data.length=2", "data.horizon=6", "data.train_size=64", "data.val_size=16",
                "data.test_size=16", "trainer.batch_size=16"],
    "tbptt": ["conf=sine_tbptt", "data.length=6", "data.streams=4", "data.train_size=200", "data.val_size=50",
              "data.test_size=50", "trainer.batch_size=4"],
}


# the streams run stays in the default suite; the other three compile larger programs
@pytest.mark.parametrize("structure", [pytest.param(s, marks=() if s == "tbptt" else pytest.mark.slow)
                                       for s in STRUCTURES])
def test_each_structure_trains_a_few_steps_through_the_cli(nnrun_cli, tmp_path, structure):
    run_dir = tmp_path / structure
    result = nnrun_cli("train", *STRUCTURES[structure], *TINY, f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    summary = read_json(run_dir / "summary.json")
    assert summary["status"] == "completed" and summary["steps_done"] == 4
    assert np.isfinite(summary["test"]["rmse"])
    train = [r for r in read_metrics(run_dir) if r["split"] == "train"]
    assert len(train) == 2 and all(r["grad_norm_R1"] > 0 and r["grad_norm_Out"] > 0 for r in train)


def test_a_carried_state_without_streams_is_a_one_line_error(nnrun_main, tmp_path):
    outcome = nnrun_main("train", "conf=sine_seq2seq", "model.carry=true", *TINY, *STRUCTURES["seq2seq"][5:],
                         f"hydra.run.dir={tmp_path / 'run'}")
    assert_one_line_error(outcome, "model.carry=true", "trainer.batch_size equal to data.streams")
