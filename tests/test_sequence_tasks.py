"""Real time series (sunspots, airline, a user's CSV), formal languages (a^n b^n, a^n b^n
c^n) and the dates encoder-decoder: data, baselines, decoding, bad input, and a few steps
of each through the CLI."""
from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.errors import UserError
from tests.conftest import assert_one_line_error, read_json

QUIET = ["trainer.progress=false", "trainer.plots=false"]


# ---------------------------------------------------------------------------- time series
def write_csv(path: Path, rows: list[str], header: str = "month,value") -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def csv_config(path: Path, **fields):
    from experiments.data.timeseries import TimeSeriesConfig

    return TimeSeriesConfig(path=str(path), **{"window": 4, "test_size": 3, "val_size": 0, **fields})


@pytest.mark.parametrize("cells, fragments", [
    (["1.0", "2.0", "", "4.0"], ["row 3 (line 4)", "missing value in column 'value'", "fill it in or delete the row"]),
    (["1.0", "2.0", "3.0", "n/a"], ["row 4 (line 5)", "'n/a' in column 'value' is not a number", "correct the cell"]),
    (["1.0", "inf", "3.0"], ["row 2 (line 3)", "not a finite number"]),
    (["1.0", "2.0", "3.0"], ["has 3 rows", "data.window + data.horizon = 5", "smaller data.window"]),
])
def test_bad_series_csv_names_the_file_the_row_and_the_fix(tmp_path: Path, cells, fragments) -> None:
    from experiments.data.timeseries import load_csv

    path = write_csv(tmp_path / "mine.csv", [f"2000-{i + 1:02d},{c}" for i, c in enumerate(cells)])
    with pytest.raises(UserError) as err:
        load_csv(csv_config(path))
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_series_csv_is_one_line_through_the_cli(tmp_path: Path, nnrun_main) -> None:
    path = write_csv(tmp_path / "gaps.csv", [f"{v}" for v in ["1", "2", "", *map(str, range(60))]], header="value")
    outcome = nnrun_main("train", "conf=airline", "data=timeseries_csv", f"data.path={path}", *QUIET)
    assert_one_line_error(outcome, str(path), "row 3", "missing value", "fill it in")


def test_series_splits_keep_the_tail_held_out_and_standardise_on_training(tmp_path: Path) -> None:
    from experiments.data.timeseries import load_csv

    values = np.arange(30, dtype=float) ** 1.5
    path = write_csv(tmp_path / "s.csv", [f"{v}" for v in values], header="v")
    data = load_csv(csv_config(path, window=5, horizon=2, test_size=6, val_size=4))
    mean, std = values[:20].mean(), values[:20].std()  # the training part: before validation
    assert data.meta["mean"] == pytest.approx(mean) and data.meta["std"] == pytest.approx(std)
    back = lambda a: np.asarray(a) * std + mean  # noqa: E731
    # every test target lies in the last 6 steps, every training target before validation
    assert np.allclose(back(data.test.y), [[values[t], values[t + 1]] for t in range(24, 29)])
    assert np.allclose(back(data.test.x[0, :, 0]), values[19:24])
    assert back(data.train.y).max() <= values[19] + 1e-6 and len(data.val) == 3
    assert data.train.x.shape[1:] == (5, 1) and data.train.y.shape[1:] == (2,)


def test_packaged_series_load_and_airline_baselines_match_a_direct_computation() -> None:
    from experiments.data.timeseries import AirlineConfig, SunspotsConfig, load_airline, load_sunspots
    from experiments.objectives.regression import Regression

    sun = load_sunspots(SunspotsConfig())
    assert len(sun.meta["labels"]) == 3126 and sun.meta["labels"][0] == "1749-01" and len(sun.test) == 264
    air = load_airline(AirlineConfig(horizon=3))
    raw = np.asarray(air.meta["series"], float) * air.meta["std"] + air.meta["mean"]
    assert raw[0] == pytest.approx(112) and raw.sum() == pytest.approx(40363)
    objective = Regression(baseline="persistence,seasonal_naive", season=12)
    batch = {k: jnp.asarray(v) for k, v in air.test.arrays.items()}
    m = objective.finalize({k: float(v) for k, v in objective.sums(batch["y"], batch).items()})
    origins = np.asarray(air.meta["test_origins"])
    truth = np.stack([raw[origins + h] for h in range(3)], 1)
    seasonal = np.stack([raw[origins + h - 12] for h in range(3)], 1)
    persistence = np.repeat(raw[origins - 1][:, None], 3, 1)
    rms = lambda f: float(np.sqrt(np.mean((f - truth) ** 2))) / air.meta["std"]  # noqa: E731
    assert m["rmse"] == pytest.approx(0.0, abs=1e-6)  # the truth as the forecast
    assert m["seasonal_naive_rmse"] == pytest.approx(rms(seasonal), rel=1e-4)
    assert m["persistence_rmse"] == pytest.approx(rms(persistence), rel=1e-4)
    assert m["seasonal_naive_mae"] == pytest.approx(np.mean(np.abs(seasonal - truth)) / air.meta["std"], rel=1e-4)
    with pytest.raises(UserError, match="objective.season=48"):
        Regression(baseline="seasonal_naive", season=48).sums(batch["y"], batch)


@pytest.mark.slow  # several compilations (train, val, test, eval, beam eval): > 20 s of CPU
def test_forecaster_trains_through_the_cli_with_baselines_and_a_forecast_figure(nnrun_cli, outputs: Path) -> None:
    run_dir = outputs / "airline-run"
    outcome = nnrun_cli("train", "conf=airline", "data.horizon=2", "model.hidden=8", "trainer.epochs=2",
                        "trainer.progress=false", f"hydra.run.dir={run_dir}")
    assert outcome.code == 0, outcome.out
    test = read_json(run_dir / "summary.json")["test"]
    for key in ("rmse", "mae", "persistence_rmse", "persistence_mae", "seasonal_naive_rmse", "seasonal_naive_mae"):
        assert math.isfinite(test[key]) and test[key] > 0, key
    assert test["rmse_ratio_seasonal_naive"] == pytest.approx(test["rmse"] / test["seasonal_naive_rmse"])
    assert (run_dir / "plots" / "forecast.png").stat().st_size > 10_000


# ---------------------------------------------------------------------------- formal languages
def test_formal_language_strings_and_predictable_positions() -> None:
    from experiments.data.formal_languages import A, B, C, END, START, string

    x, y, mask = string(3, (A, B))
    assert x.tolist() == [START, A, A, A, B, B, B] and y.tolist() == [A, A, A, B, B, B, END]
    # the first a is certain; inside the a-run and at the first b either may follow
    assert mask.tolist() == [True, False, False, False, True, True, True]
    x, y, mask = string(2, (A, B, C))
    assert y.tolist() == [A, A, B, B, C, C, END] and mask.tolist() == [True, False, False, True, True, True, True]


def test_exact_match_per_n_finds_the_largest_n_right_for_every_smaller_n() -> None:
    from experiments.data.formal_languages import A, B, load, FormalLanguageConfig
    from experiments.objectives.sequence import SequenceClassification

    data = load(FormalLanguageConfig(train_size=8, val_size=0, test_max_n=9))
    batch = {k: jnp.asarray(v) for k, v in data.test.arrays.items()}
    logits = jax.nn.one_hot(batch["y"], 6) * 5.0  # right everywhere ...
    wrong = (batch["n"] == 6)[:, None] & (batch["y"] == B) & (jnp.arange(batch["y"].shape[1]) == 9)
    logits = jnp.where(wrong[..., None], jax.nn.one_hot(A, 6) * 5.0, logits)  # ... but one predictable b at n=6
    objective = SequenceClassification(0, by="n", by_max=20)
    sums = jax.jit(objective.sums)  # one program, not hundreds of eager ops
    m = objective.finalize({k: float(v) for k, v in sums(logits, {**batch, "_valid": jnp.ones(9)}).items()})
    assert m["right_up_to"] == 5 and m["largest_right"] == 9 and m["exact_match"] == pytest.approx(8 / 9)
    # an unpredictable position (inside the a-run) does not count
    unpredictable = (batch["n"] == 3)[:, None] & (jnp.arange(batch["y"].shape[1]) == 1)
    logits = jnp.where(unpredictable[..., None], jax.nn.one_hot(B, 6) * 5.0, jax.nn.one_hot(batch["y"], 6) * 5.0)
    m = objective.finalize({k: float(v) for k, v in sums(logits, {**batch, "_valid": jnp.ones(9)}).items()})
    assert m["right_up_to"] == 9


def test_forget_bias_lstm_cell_keeps_its_memory_by_default() -> None:
    from experiments.models.symbol_rnn import ForgetBiasLSTMCell

    cell = ForgetBiasLSTMCell(3, forget_bias=2.0)
    x, c = jnp.ones((2, 4)), jnp.asarray([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
    params = cell.init(jax.random.key(0), (c, jnp.zeros_like(c)), x)
    zero = jax.tree.map(jnp.zeros_like, params)  # no input, no recurrence: only the gates' biases act
    (c_next, h_next), out = cell.apply(zero, (c, jnp.zeros_like(c)), x)
    assert jnp.allclose(c_next, jax.nn.sigmoid(2.0) * c)  # forget gate sigmoid(0 + 2); candidate tanh(0) = 0
    assert jnp.allclose(h_next, 0.5 * jnp.tanh(c_next)) and jnp.allclose(out, h_next)


def test_anbn_trains_through_the_cli_and_reports_the_largest_n(nnrun_cli, outputs: Path) -> None:
    run_dir = outputs / "anbn-run"
    outcome = nnrun_cli("train", "conf=anbncn", "data.train_size=64", "data.val_size=16", "data.train_max_n=6",
                        "data.test_max_n=12", "objective.by_max=12", "model.hidden=4", "trainer.epochs=1",
                        "trainer.batch_size=16", "trainer.log_every=2", *QUIET, f"hydra.run.dir={run_dir}")
    assert outcome.code == 0, outcome.out
    test = read_json(run_dir / "summary.json")["test"]
    assert 0 <= test["right_up_to"] <= test["largest_right"] <= 12 and 0 <= test["exact_match"] <= 1


# ---------------------------------------------------------------------------- dates, encoder-decoder
def test_dates_have_several_forms_iso_targets_and_disjoint_held_out_dates() -> None:
    from experiments.data.dates import FORMS, SOURCE_CHARS, DatesConfig, decode_target, load

    assert FORMS[0](dt.date(1998, 3, 3)) == "the 3rd of March 1998"
    assert {f(dt.date(2011, 11, 11)) for f in FORMS} >= {"November 11, 2011", "11th Nov 2011", "11 November 2011"}
    data = load(DatesConfig(train_size=3000, val_size=300, test_size=300))
    text = lambda row: "".join(SOURCE_CHARS[t - 1] for t in row if t)  # noqa: E731
    iso = {name: {decode_target(y) for y in split.y} for name, split in
           (("train", data.train), ("val", data.val), ("test", data.test))}
    assert len(iso["test"]) == 300 and not iso["test"] & iso["train"] and not iso["val"] & iso["train"]
    first = dt.date.fromisoformat(decode_target(data.test.y[0]))
    assert text(data.test.x[0]) in {f(first) for f in FORMS}
    assert (data.test.y[:, -1] == 2).all() and data.test.arrays["mask"].sum() == data.test.y.size  # the end token, all counted


@pytest.mark.slow  # 125-beam search compiled: ~10 s
def test_beam_search_with_every_prefix_kept_is_exact_and_one_beam_is_greedy() -> None:
    import itertools

    from experiments.models.seq2seq import Seq2Seq

    x = jax.random.randint(jax.random.key(1), (4, 7), 1, 20)
    vocab, length = 5, 3
    greedy_model = Seq2Seq("gru", 16, 8, 32, vocab, length, beam=1)
    params = greedy_model.init(jax.random.key(0), x)

    @jax.jit
    @jax.vmap
    def log_prob(tokens):  # the model's own probability of token sequences (teacher forcing), through the end
        logp = jax.nn.log_softmax(greedy_model.apply(params, x, train=True, y=tokens))
        keep = (jnp.cumsum(tokens == 2, axis=1) - (tokens == 2)) == 0
        return jnp.sum(jnp.take_along_axis(logp, tokens[..., None], -1)[..., 0] * keep, 1)

    every = jnp.asarray(list(itertools.product(range(vocab), repeat=length)), jnp.int32)  # (125, length)
    best = jnp.max(log_prob(jnp.broadcast_to(every[:, None], (len(every), 4, length))), 0)
    decode = lambda beam: jnp.argmax(jax.jit(Seq2Seq("gru", 16, 8, 32, vocab, length, beam=beam).apply)(params, x), -1)  # noqa: E731
    exhaustive, greedy, two = decode(vocab ** (length - 1)), decode(1), decode(2)
    assert exhaustive.shape == greedy.shape == (4, length)
    scores = log_prob(jnp.stack([exhaustive, greedy, two]))
    assert jnp.allclose(scores[0], best, atol=1e-4)  # every prefix kept: the most likely sequence
    assert bool(jnp.all(scores[1:] <= best + 1e-4))


def test_teacher_forcing_reads_y_only_in_training() -> None:
    from experiments.models.seq2seq import Seq2Seq
    from experiments.objectives.sequence import SequenceClassification
    from experiments.training.gradient import GradientSteps, model_inputs
    from experiments.training import Streams
    import optax

    model = Seq2Seq("lstm", 8, 4, 16, 6, 4)
    steps = GradientSteps(model, optax.sgd(0.1), SequenceClassification(0))
    batch = {"x": jnp.ones((3, 5), jnp.int32), "y": jnp.full((3, 4), 3, jnp.int32), "mask": jnp.ones((3, 4))}
    state = jax.jit(steps.init)(jax.random.key(0), batch)
    assert set(model_inputs(model, batch)) == {"y"}  # mask is the objective's, not the model's
    out = jax.jit(steps.outputs)(state, batch)  # evaluation: decoded from x alone
    assert out.shape == (3, 4, 6)
    other_targets = jax.jit(steps.outputs)(state, {**batch, "y": jnp.zeros_like(batch["y"])})
    assert jnp.array_equal(out, other_targets)
    forced = jax.jit(lambda p, b: model.apply({"params": p}, b["x"], train=True, y=b["y"]))(state.params, batch)
    assert not jnp.allclose(forced, out)  # the fed tokens differ from the model's own
    new, sums = jax.jit(steps.train_step)(state, batch, Streams(jax.random.key(1)))
    assert float(sums["weight"]) == 12 and not jnp.allclose(new.params["out"]["kernel"], state.params["out"]["kernel"])


@pytest.mark.slow  # several compilations (train, val, test, eval, beam eval): > 20 s of CPU
def test_dates_seq2seq_trains_and_evaluates_exact_match_through_the_cli(nnrun_cli, outputs: Path) -> None:
    run_dir = outputs / "dates-run"
    outcome = nnrun_cli("train", "conf=dates_seq2seq", "data.train_size=128", "data.val_size=32",
                        "data.test_size=64", "model.hidden=16", "model.embed=8", "trainer.epochs=1",
                        "trainer.batch_size=32", "trainer.log_every=2", *QUIET, f"hydra.run.dir={run_dir}")
    assert outcome.code == 0, outcome.out
    assert 0 <= read_json(run_dir / "summary.json")["test"]["exact_match"] <= 1
    outcome = nnrun_cli("eval", str(run_dir))
    assert outcome.code == 0 and "exact_match" in outcome.out
    assert read_json(run_dir / "eval-best-test.json")["split"] == "test"
    outcome = nnrun_cli("eval", str(run_dir), "model.beam=3")  # beam search at evaluation, its own file
    beam = read_json(run_dir / "eval-best-test-model.beam=3.json")
    assert outcome.code == 0 and beam["overrides"] == ["model.beam=3"] and 0 <= beam["exact_match"] <= 1
    with pytest.raises(UserError, match="model or trainer.eval_batch_size only"):
        nnrun_cli("eval", str(run_dir), "optim.lr=1.0")
