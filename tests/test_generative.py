"""Unsupervised and generative networks: the GAN (trainer=adversarial, classifier-judged
eval), autoencoders (dense, convolutional, denoising, variational; latent export) and the
RBF network (k-means initialised centres)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import assert_one_line_error, read_json, read_metrics, restore_raw
from test_resume import assert_trees_equal

# A GAN of a few seconds: 500 train / 100 val / 200 test, 10 steps per epoch, tiny players.
TINY_GAN = [
    "data.train_subset=600", "data.val_size=100", "data.test_subset=200",
    "model.latent=8", "model.g_width=4", "model.d_width=4",
    "trainer.epochs=2", "trainer.batch_size=50", "trainer.log_every=5", "trainer.grid=3",
    "trainer.fid_samples=100", "trainer.eval_samples=200", "trainer.progress=false",
]


# ----------------------------------------------------------------------------- scores (pure)


def test_scores_name_a_collapsed_generator_and_a_healthy_one() -> None:
    from experiments.gan_scores import FeatureStats, scores, verdict

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(500, 6))
    one_class = np.full((500, 10), 0.001)
    one_class[:, 3] = 0.991
    s = scores(one_class, feats, FeatureStats.of(feats))
    assert s["inception_score"] == pytest.approx(1.0, abs=1e-6)
    assert s["classes_present"] == 1 and s["class_share"]["3"] == 1.0
    assert verdict(s, 10) == "COLLAPSED: 100% of the samples are class 3"
    assert s["fid"] == pytest.approx(0.0, abs=1e-6)  # same features as the reference

    spread = np.eye(10)[np.arange(500) % 10] * 0.99 + 0.001
    s = scores(spread, feats, None)
    assert 9.0 < s["inception_score"] < 10.0  # 10 * exp(-entropy of p(y|x))
    assert s["confident_share"] == 1.0 and s["min_class_share"] == pytest.approx(0.1)
    assert verdict(s, 10).startswith("all 10 classes present")
    missing = spread[np.arange(500) % 10 != 7]
    assert "classes 7 are missing" in verdict(scores(missing, feats[: len(missing)], None), 10)


def test_frechet_distance_matches_the_closed_form() -> None:
    """Gaussians with commuting covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2."""
    from experiments.gan_scores import FeatureStats, frechet_distance

    a = FeatureStats(np.zeros(3), np.diag([1.0, 4.0, 9.0]))
    b = FeatureStats(np.array([1.0, 0.0, 2.0]), np.diag([4.0, 4.0, 1.0]))
    assert frechet_distance(a, b) == pytest.approx(5.0 + 1.0 + 0.0 + 4.0)


# ----------------------------------------------------------------------------- the GAN, trained


@pytest.fixture(scope="module")
def gan_runs(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny GAN judged by the session's tiny LeNet5 run, trained whole; and the same GAN
    stopped after 15 of its 20 steps, then resumed."""
    from typer.testing import CliRunner

    from cli.main import app

    base = tmp_path_factory.mktemp("gan")
    classifier = trained_run["dir"]
    common = ["train", "conf=gan_mnist", *TINY_GAN, f"trainer.classifier={classifier}"]
    runner = CliRunner()
    whole = runner.invoke(app, [*common, f"hydra.run.dir={base / 'whole'}"])
    assert whole.exit_code == 0, whole.stdout
    cut = runner.invoke(app, [*common, "trainer.max_steps=15", f"hydra.run.dir={base / 'cut'}"])
    assert cut.exit_code == 0, cut.stdout
    resumed = runner.invoke(app, ["train", f"resume={base / 'cut'}", "trainer.max_steps=null"])
    assert resumed.exit_code == 0, resumed.stdout
    return {"whole": base / "whole", "cut": base / "cut", "classifier": classifier}


@pytest.mark.slow  # three tiny GAN runs: ~60 s of compiling and stepping on 2 cores
def test_gan_run_records_both_players_and_draws_a_grid_each_epoch(gan_runs: dict) -> None:
    run = gan_runs["whole"]
    summary = read_json(run / "summary.json")
    assert summary["status"] == "completed" and summary["steps_done"] == 20
    vals = [r for r in read_metrics(run) if r["split"] == "val"]
    assert [r["epoch"] for r in vals] == [1.0, 2.0]
    for r in vals:
        assert {"g_loss", "d_loss", "d_real", "d_fake", "fid"} <= set(r)
        assert 0 < r["d_real"] < 1 and 0 < r["d_fake"] < 1 and r["fid"] > 0
    assert summary["best_metric"] == "fid" and summary["best"]["fid"] == min(r["fid"] for r in vals)
    grids = sorted(p.name for p in (run / "plots" / "samples").iterdir())
    assert grids == ["epoch_001.png", "epoch_002.png"]
    from PIL import Image

    assert Image.open(run / "plots" / "samples" / "epoch_002.png").size == (2 * 3 * 30, 2 * 3 * 30)
    assert (run / "plots" / "samples.png").is_file()
    state, _ = restore_raw(run / "checkpoints")
    inner = state["inner"]
    assert set(inner) == {"g_params", "d_params", "g_opt_state", "d_opt_state", "fixed_z", "g_ema"}
    assert inner["fixed_z"].shape == (9, 8)


@pytest.mark.slow  # three tiny GAN runs: ~60 s of compiling and stepping on 2 cores
def test_resumed_gan_ends_like_the_uninterrupted_one(gan_runs: dict) -> None:
    whole, cut = gan_runs["whole"], gan_runs["cut"]
    a, step_a = restore_raw(whole / "checkpoints")
    b, step_b = restore_raw(cut / "checkpoints")
    assert step_a == step_b == 20
    assert_trees_equal(a["inner"], b["inner"])

    def records(d: Path) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in ("time", "examples_per_s")} for r in read_metrics(d)]

    ours, theirs = records(cut), records(whole)
    assert [r for r in ours if r["split"] == "val"] == [r for r in theirs if r["split"] == "val"]
    assert {r["step"]: r["g_loss"] for r in ours if r["split"] == "train"} == \
        pytest.approx({r["step"]: r["g_loss"] for r in theirs if r["split"] == "train"}, rel=1e-6)


@pytest.mark.slow  # three tiny GAN runs: ~60 s of compiling and stepping on 2 cores
def test_eval_scores_samples_beside_real_images(gan_runs: dict, nnrun_main) -> None:
    out = nnrun_main("eval", str(gan_runs["whole"]))
    assert out.code == 0, out.err
    metrics = read_json(gan_runs["whole"] / "eval.json")
    assert metrics["samples"] == 200 and metrics["real_images"] == 200
    for key in ("inception_score", "confident_share", "min_class_share", "fid"):
        assert set(metrics[key]) == {"generated", "real"}
    assert 1.0 <= metrics["inception_score"]["generated"] <= 10.0
    assert sum(v["real"] for v in metrics["class_share"].values()) == pytest.approx(1.0)
    assert metrics["verdict"]  # one line on the spread of classes, collapse included
    assert "inception_score.generated" in out.out and "inception_score.real" in out.out


def test_the_generator_average_follows_its_decay_and_is_what_samples_come_from() -> None:
    import jax
    import jax.numpy as jnp

    from experiments.config import validate
    from experiments.data import load_dataset
    from experiments.hydra_bridge import compose, task_config
    from experiments.training import Streams
    from experiments.training.adversarial import build_steps
    from experiments.training.driver import compiled_for_one_use

    def steps_for(*overrides: str):
        exp = validate(task_config(compose("gan_mnist", [*TINY_GAN, *overrides])[0]))
        return build_steps(exp, load_dataset(exp.data))

    steps = steps_for("trainer.ema=0.75")
    batch = {"x": jnp.asarray(steps.data.train.x[:50])}
    state = compiled_for_one_use(jax.jit(steps.init))(jax.random.key(0), batch)  # eager: op by op, 15 s
    leaves = lambda tree: [np.asarray(a) for a in jax.tree.leaves(tree)]  # noqa: E731
    assert all(np.array_equal(a, b) for a, b in zip(leaves(state.g_ema), leaves(state.g_params)))
    new, _ = jax.jit(steps.train_step)(state, batch, Streams(jax.random.key(1)))
    for old, g, avg in zip(leaves(state.g_params), leaves(new.g_params), leaves(new.g_ema)):
        np.testing.assert_allclose(avg, 0.75 * old + 0.25 * g, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(leaves(new.g_ema), leaves(new.g_params)))
    drawn = np.asarray(jax.jit(steps.outputs)(new, None))
    np.testing.assert_allclose(drawn, np.asarray(jax.jit(steps.generate)(new.g_ema, new.fixed_z)), atol=1e-6)

    plain = steps_for("trainer.ema=0")
    assert jax.eval_shape(plain.init, jax.random.key(0), batch).g_ema is None  # the checkpoint tree of runs made before the average


def test_r1_penalises_the_discriminators_input_gradient_on_real_images() -> None:
    import jax
    import jax.numpy as jnp

    from experiments.config import validate
    from experiments.data import load_dataset
    from experiments.hydra_bridge import compose, task_config
    from experiments.training import Streams
    from experiments.training.adversarial import build_steps
    from experiments.training.driver import compiled_for_one_use

    def steps_for(*overrides: str):
        exp = validate(task_config(compose("gan_mnist", [*TINY_GAN, *overrides])[0]))
        return build_steps(exp, load_dataset(exp.data))

    steps, plain = steps_for("trainer.r1=10.0"), steps_for("trainer.r1=0")
    batch = {"x": jnp.asarray(steps.data.train.x[:16])}
    state = compiled_for_one_use(jax.jit(steps.init))(jax.random.key(0), batch)  # eager: op by op, 15 s
    real = steps.pixels.to_gan(batch["x"])
    # one image at a time: the batched penalty must equal the mean squared norm of each logit's own gradient
    per_image = jax.jit(jax.vmap(jax.grad(lambda x: steps.discriminate(state.d_params, x[None])[0])))(real)
    expected = np.mean(np.sum(np.asarray(per_image).reshape(16, -1) ** 2, axis=1))
    penalty = float(jax.jit(steps.r1_penalty)(state.d_params, real))
    assert penalty > 0
    np.testing.assert_allclose(penalty, expected, rtol=1e-4)
    # the penalty reaches the discriminator's update and nothing else: same generator step input
    new, sums = jax.jit(steps.train_step)(state, batch, Streams(jax.random.key(1)))
    base, base_sums = jax.jit(plain.train_step)(state, batch, Streams(jax.random.key(1)))
    np.testing.assert_allclose(float(sums["d_loss"]), float(base_sums["d_loss"]) + 16 * 5.0 * penalty, rtol=1e-4)
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(new.d_params), jax.tree.leaves(base.d_params)))


@pytest.mark.parametrize("key, value, hint", [("ema", "1.5", "[0, 1)"), ("r1", "-1", ">= 0")])
def test_a_bad_average_decay_or_penalty_is_one_line(nnrun_main, outputs: Path, key: str, value: str,
                                                     hint: str) -> None:
    out = nnrun_main("train", "conf=gan_mnist", f"trainer.{key}={value}")
    assert_one_line_error(out, f"trainer.{key}", value, hint)
    assert not (outputs / "gan_mnist").exists()


# ----------------------------------------------------------------------------- bad classifiers


def test_a_missing_classifier_fails_in_one_line_before_a_run_exists(nnrun_main, outputs: Path) -> None:
    out = nnrun_main("train", "conf=gan_mnist", "trainer.classifier=/no/such/run")
    assert_one_line_error(out, "trainer.classifier", "/no/such/run", "does not exist")
    assert not (outputs / "gan_mnist").exists()


def test_a_classifier_of_another_kind_or_shape_is_refused(trained_run: dict, tmp_path: Path) -> None:
    from experiments.errors import UserError
    from experiments.gan_scores import Judge

    def copy_with(**changes) -> Path:
        run = tmp_path / "_".join(changes)
        shutil.copytree(trained_run["dir"], run, ignore=shutil.ignore_patterns("checkpoints", "plots"))
        cfg = yaml.safe_load((run / "config.yaml").read_text())
        for group, value in changes.items():
            cfg[group] = value
        (run / "config.yaml").write_text(yaml.safe_dump(cfg))
        return run

    with pytest.raises(UserError, match="is not a classifier .*'reconstruction'"):
        Judge.load(copy_with(objective={"name": "reconstruction"}), (28, 28, 1))
    with pytest.raises(UserError, match=r"takes images of shape \(28, 28\), the GAN draws \(28, 28, 1\)"):
        Judge.load(copy_with(data={"name": "mnist_seq"}, model={"name": "rnn"}), (28, 28, 1))
    with pytest.raises(UserError, match="is not an nnrun run directory"):
        Judge.load(tmp_path, (28, 28, 1))
    with pytest.raises(UserError, match="no layer 'F9'"):
        Judge.load(trained_run["dir"], (28, 28, 1), layer="F9")


# ----------------------------------------------------------------------------- autoencoders


def _ae(**fields):
    from experiments.models import DataInfo, build_model
    from experiments.models.autoencoder import AutoencoderConfig

    return build_model(AutoencoderConfig(**fields), DataInfo((28, 28, 1), 10))


def test_half_noise_corrupts_one_half_of_each_image_only() -> None:
    import jax

    from experiments.models.autoencoder import corrupt

    x = np.zeros((64, 28, 28, 1), np.float32)
    noisy = np.asarray(jax.jit(lambda k: corrupt(x, k, "half", 1.0))(jax.random.key(0)))
    for img in noisy[..., 0]:
        halves = [img[:14], img[14:], img[:, :14], img[:, 14:]]
        touched = [bool(np.any(h != 0)) for h in halves]
        clean = [bool(np.all(h == 0)) for h in halves]
        assert sum(clean) == 1 and sum(touched) == 3  # one half noisy; the opposite half untouched
    assert 0.45 < np.mean(noisy != 0) < 0.55


def test_conv_and_variational_autoencoders_report_reconstruction_and_kl() -> None:
    import jax

    from experiments.objectives.reconstruction import Reconstruction

    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype(np.float32)
    conv = _ae(kind="conv", channels=[4, 8], code=3)
    shapes = jax.eval_shape(lambda k: (lambda v: (conv.apply(v, x), conv.apply(v, x, method="encode")))(
        conv.init(k, x)), jax.random.key(0))
    assert shapes[0].shape == (4, 784) and shapes[1].shape == (4, 3)

    vae = _ae(hidden=[16], code=2, variational=True)
    light, heavy = Reconstruction("bce", kl_weight=0.0), Reconstruction("bce", kl_weight=10.0)

    @jax.jit
    def run(key):
        variables = vae.init(key, x)
        out = vae.apply(variables, x, train=True, rngs={"latent": jax.random.fold_in(key, 1)})
        evals = vae.apply(variables, x).recon, vae.apply(variables, x).recon
        return out, light.sums(out, {"x": x}), heavy.sums(out, {"x": x}), evals

    out, sums_light, sums_heavy, (eval_a, eval_b) = run(jax.random.key(0))
    assert out.shape == (4, 784) and out.kl.shape == (4,) and bool(np.all(np.asarray(out.kl) >= 0))
    s_light = light.finalize({k: float(v) for k, v in sums_light.items()})
    s_heavy = heavy.finalize({k: float(v) for k, v in sums_heavy.items()})
    assert {"mse", "kl", "loss"} <= set(s_light) and s_light["kl"] > 0
    assert s_heavy["loss"] == pytest.approx(s_light["loss"] + 10.0 * s_light["kl"], rel=1e-5)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))  # evaluation decodes the mean


AE_TINY = ["data.train_subset=1200", "data.val_size=200", "data.test_subset=300", "trainer.epochs=1",
           "trainer.batch_size=100", "trainer.log_every=5", "trainer.progress=false", "model.hidden=[32]"]


def test_2d_autoencoder_draws_its_latent_space_and_exports_codes(nnrun_main, trained_run: dict,
                                                                   tmp_path: Path) -> None:
    run = tmp_path / "ae"
    out = nnrun_main("train", "conf=autoencoder_2d", *AE_TINY, f"hydra.run.dir={run}")
    assert out.code == 0, out.err
    assert {"latent_space.png", "interpolation.png", "reconstructions.png"} <= {p.name for p in (run / "plots").iterdir()}
    target = tmp_path / "codes.npy"
    out = nnrun_main("latents", str(run), "--split", "test", "--out", str(target))
    assert out.code == 0, out.err
    codes, labels = np.load(target), np.load(tmp_path / "codes.labels.npy")
    assert codes.shape == (300, 2) and codes.dtype == np.float32 and labels.shape == (300,)
    assert np.all(np.isfinite(codes)) and codes.std(0).min() > 0

    assert_one_line_error(nnrun_main("latents", str(trained_run["dir"]), "--out", str(tmp_path / "x.npy")),
                          "has no latent code")
    assert_one_line_error(nnrun_main("latents", str(run), "--out", str(tmp_path / "codes.txt")), "must end in .npy")
    assert_one_line_error(nnrun_main("latents", str(run), "--split", "nope"), "unknown split 'nope'")
    assert not (tmp_path / "x.npy").exists()


# ----------------------------------------------------------------------------- RBF network


def test_rbf_centres_start_at_the_clusters_and_can_stay_fixed() -> None:
    import jax

    from experiments.data import Split
    from experiments.models import DataInfo, build_model
    from experiments.models.rbf import RBFConfig

    rng = np.random.default_rng(0)
    means = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = np.concatenate([m + 0.1 * rng.normal(size=(100, 2)) for m in means]).astype(np.float32)
    model = build_model(RBFConfig(centres=3, kmeans_iters=10), DataInfo((2,), 3))
    init = model.init_from_data(Split(x, np.zeros(len(x), np.int32)))["RBF"]
    found = np.asarray(init["centres"])
    assert sorted(np.round(found).tolist()) == sorted(means.tolist())
    # each width: the RMS distance to the other two centres (10 and 10, or 10 and 14.1)
    widths = sorted(np.exp(np.asarray(init["log_width"])).tolist())
    assert widths == pytest.approx([10.0, np.sqrt(150.0), np.sqrt(150.0)], rel=0.05)

    fixed = build_model(RBFConfig(centres=3, fixed_centres=True), DataInfo((2,), 3))
    params = {**fixed.init(jax.random.key(0), x[:2])["params"], "RBF": init}
    grads = jax.jit(jax.grad(lambda p: fixed.apply({"params": p}, x[:8]).sum()))(params)
    assert not np.any(np.asarray(grads["RBF"]["centres"])) and np.any(np.asarray(grads["RBF"]["log_width"]))


# ----------------------------------------------------------------------------- vectorised GAN sweeps


@pytest.mark.slow  # a vmapped GAN program: ~1 min of compiling on 2 cores
def test_gan_trials_differing_in_seed_and_learning_rates_train_as_one_vmapped_group(tmp_path: Path) -> None:
    from experiments.sweep.spec import Trial
    from experiments.sweep.vectorized import plan_vectorized, run_vectorized_group

    small = [o for o in TINY_GAN if not o.startswith("trainer.fid")] + ["trainer.epochs=1"]
    trials = [Trial("000", [*small, "optim_d.lr=0.0002"], {}), Trial("001", [*small, "optim_d.lr=0.001", "seed=1"], {}),
              Trial("002", [*small, "optim.lr=0.001"], {})]
    groups, fallback, reason = plan_vectorized("gan_mnist", trials, force=False)
    assert [[t.id for t in g] for g in groups] == [["000", "001", "002"]] and not fallback and reason == ""
    run_vectorized_group("gan_mnist", groups[0], tmp_path)
    finals = []
    for t in trials:
        summary = read_json(tmp_path / t.id / "summary.json")
        assert summary["status"] == "completed" and summary["vectorized"] is True
        finals.append(summary["final"]["val"]["d_loss"])
    assert len(set(finals)) == 3  # each lane trained with its own values
