"""The CNN zoo: pooling layers, `nnrun demo kernels`, the YAML-described CNN and its shape
errors, the published parameter counts of AlexNet, GoogLeNet and ResNet (`nnrun show`),
BatchNorm's running statistics in checkpoints and in eval, and the classifier figures."""
from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import TINY, assert_one_line_error, read_json, restore_raw

# ---------------------------------------------------------------------------- pooling


def test_max_avg_min_pooling_any_window_and_stride() -> None:
    from experiments.models.layers import pool

    x = np.arange(25, dtype=np.float32).reshape(1, 5, 5, 1)
    # 3x3 windows, stride 2, overlapping: windows start at rows/cols 0 and 2
    assert pool(x, "max", 3, 2)[0, ..., 0].tolist() == [[12, 14], [22, 24]]
    assert pool(x, "min", 3, 2)[0, ..., 0].tolist() == [[0, 2], [10, 12]]
    assert pool(x, "avg", 3, 2)[0, ..., 0].tolist() == [[6, 8], [16, 18]]
    # the default stride is the window: non-overlapping 2x2 (the last row/column dropped)
    assert pool(x, "max", 2)[0, ..., 0].tolist() == [[6, 8], [16, 18]]
    # min pooling is -maxpool(-x), also for negative inputs
    z = np.random.default_rng(0).normal(size=(2, 6, 6, 3)).astype(np.float32)
    np.testing.assert_array_equal(pool(z, "min", 2, 1), -pool(-z, "max", 2, 1))


def test_average_pooling_is_a_strided_constant_convolution() -> None:
    from experiments.demo import correlate, kernel_demo, load_image

    image, title = load_image(index=7)
    demo = kernel_demo(image, title, window=4)
    assert demo.pooled["avg"].shape == (7, 7) and demo.max_abs_diff < 1e-6
    # the course's convolution, no flip: a kernel with one 1 at (0, 2) shifts the image
    k = np.zeros((3, 3), np.float32)
    k[0, 2] = 1
    np.testing.assert_array_equal(correlate(image, k), image[:-2, 2:])
    # the edge kernel's entries sum to 0: zero on the flat background, not zero on the strokes
    assert demo.convolved["edge"][0, 0] == 0 and np.abs(demo.convolved["edge"]).max() > 1
    assert demo.convolved["blur"].shape == (26, 26) and demo.pooled["min"].max() <= demo.pooled["max"].max()


def test_demo_kernels_writes_one_png_and_prints_the_check(nnrun_main, tmp_path) -> None:
    result = nnrun_main("demo", "kernels", "--index", "0", "--out", str(tmp_path / "demo"))
    assert result.code == 0, result.err
    assert (tmp_path / "demo" / "kernels-mnist-0.png").is_file()
    assert "label 7" in result.out and "max |difference| = " in result.out and "(equal" in result.out
    from PIL import Image

    Image.fromarray(np.full((20, 30, 3), 200, np.uint8)).save(tmp_path / "mine.png")
    result = nnrun_main("demo", "kernels", "--image", str(tmp_path / "mine.png"), "--out", str(tmp_path / "demo"))
    assert result.code == 0 and (tmp_path / "demo" / "kernels-mine.png").is_file()
    assert_one_line_error(nnrun_main("demo", "kernels", "--image", str(tmp_path / "none.png")), "no such file")
    (tmp_path / "text.png").write_text("not an image")
    assert_one_line_error(nnrun_main("demo", "kernels", "--image", str(tmp_path / "text.png")), "not a readable image")


# ---------------------------------------------------------------------------- model=cnn


@pytest.mark.parametrize("layers, fragments", [
    ("[{type: conv, filters: 8}, {type: magic}]", ["model.layers[1]", "unknown layer type 'magic'", "conv, pool"]),
    ("[{type: pool, kind: max, window: 40}, {type: flatten}]", ["model.layers[0] (pool)", "40x40", "28x28x1"]),
    ("[{type: conv, filters: 4, kernel: 3, padding: valid}, {type: dense, units: 10}]",
     ["model.layers[1] (dense)", "26x26x4", "flatten"]),
    ("[{type: conv, filters: 4}]", ["28x28x4", "flatten"]),
    ("[{type: conv, filter: 4}]", ["model.layers[0] (conv)", "unknown key(s) filter"]),
    ("[{type: pool, kind: median}]", ["model.layers[0] (pool)", "median", "max, avg, min"]),
])
def test_cnn_layer_errors_name_the_layer_and_the_shapes(nnrun_main, layers, fragments) -> None:
    outcome = nnrun_main("show", "conf=cnn_mnist", f"model.layers={layers}")
    assert_one_line_error(outcome, *fragments)


def test_cnn_from_yaml_shapes_and_parameters() -> None:
    from experiments.models import DataInfo
    from experiments.models.cnn import CNNConfig, build, check_shapes
    from experiments.show import count_params

    cfg = CNNConfig(layers=[
        {"type": "conv", "filters": 6, "kernel": 5, "padding": 2, "activation": "relu"},
        {"type": "pool", "kind": "min", "window": 3, "stride": 2},
        {"type": "batchnorm"}, {"type": "dropout", "rate": 0.2},
        {"type": "conv", "filters": 8, "kernel": 3, "stride": 2, "padding": "valid", "groups": 2},
        {"type": "global_pool", "kind": "max"},
        {"type": "dense", "units": 12, "activation": "tanh"},
    ])
    shapes = check_shapes(cfg.layers, (28, 28, 1))
    assert shapes == [(28, 28, 6), (13, 13, 6), (13, 13, 6), (13, 13, 6), (6, 6, 8), (8,), (12,)]
    # conv 5*5*6+6, BN 2*6, grouped conv 3*3*3*8+8, dense 8*12+12, output 12*10+10
    assert count_params(build(cfg, DataInfo((28, 28, 1), 10)), DataInfo((28, 28, 1), 10)) == \
        156 + 12 + 224 + 108 + 130


# ---------------------------------------------------------------------------- published counts


@pytest.mark.parametrize("model, overrides, params", [
    # He et al. 2015, Table 6 "0.27M"; exactly as akamaster/pytorch_resnet_cifar10 counts it (option A)
    ("resnet", {"depth": 20}, 269_722),
    ("resnet", {"depth": 56}, 853_018),
    # torchvision.models.resnet18 / resnet34
    ("resnet", {"depth": 18, "variant": "imagenet"}, 11_689_512),
    ("resnet", {"depth": 34, "variant": "imagenet"}, 21_797_672),
    # the paper's two-GPU AlexNet (96 first-layer kernels, grouped conv2/4/5): 60,965,224
    ("alexnet", {"variant": "imagenet"}, 60_965_224),
    # the paper's GoogLeNet without auxiliary classifiers, with biases (Table 1 rounds the weights to 6.8M)
    ("googlenet", {"variant": "imagenet"}, 6_998_552),
])
def test_published_parameter_counts(model, overrides, params) -> None:
    from experiments.models import MODELS, DataInfo
    from experiments.show import count_params

    MODELS.discover()
    entry = MODELS.get(model)
    cfg = entry.schema(**overrides)
    info = cfg.fixed_input() or DataInfo((32, 32, 3), 10)
    assert count_params(entry.build(cfg, info), info) == params


def test_show_googlenet_imagenet_needs_no_data_and_compares_with_alexnet(nnrun_cli) -> None:
    result = nnrun_cli("show", "conf=googlenet_cifar10", "model.variant=imagenet")
    assert result.code == 0, result.out
    total = next(line for line in result.out.splitlines() if line.startswith("│ Total"))
    assert "6,998,552" in total and "1,582,671,872" in total  # params; multiply-adds (the paper: ~1.5 G)
    assert "inception5b" in result.out and "7x7x1024" in result.out
    assert "0.115x AlexNet's 60,965,224" in result.out


def test_bad_variant_and_depth_are_one_line(nnrun_main) -> None:
    assert_one_line_error(nnrun_main("show", "conf=resnet20_cifar10", "model.depth=21"), "6n+2")
    assert_one_line_error(nnrun_main("show", "conf=resnet20_cifar10", "model.variant=imagenet", "model.depth=20"),
                          "18 or 34")
    assert_one_line_error(nnrun_main("show", "conf=alexnet_cifar10", "model.variant=vgg"), "cifar, imagenet")


# ---------------------------------------------------------------------------- BatchNorm


def test_batchnorm_evaluates_with_running_averages() -> None:
    import jax
    import jax.numpy as jnp

    from experiments.models import DataInfo
    from experiments.models.resnet import ResNetConfig, build

    model = build(ResNetConfig(depth=8), DataInfo((16, 16, 3), 10))
    x = jax.random.normal(jax.random.key(0), (8, 16, 16, 3)) * 3 + 1
    variables = jax.jit(model.init)(jax.random.key(1), x)  # jitted: eager init compiles op by op
    train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
    _, updated = train(variables, x)
    before = jax.tree.leaves(variables["batch_stats"])
    after = jax.tree.leaves(updated["batch_stats"])
    assert any(not jnp.allclose(a, b) for a, b in zip(before, after))  # training moves the running averages
    # evaluation: each example's output does not depend on the rest of its batch
    evaluate = jax.jit(model.apply)
    np.testing.assert_allclose(evaluate(variables, x)[:1], evaluate(variables, x[:1]), rtol=1e-5, atol=1e-5)


def test_classifier_figures_after_training(trained_run) -> None:
    """The session's tiny LeNet5 run (plots on) drew the four image-classifier figures."""
    plots = trained_run["dir"] / "plots"
    for png in ("filters.png", "feature_maps.png", "confusion.png", "misclassified.png"):
        assert (plots / png).is_file(), png
    from PIL import Image

    with Image.open(plots / "filters.png") as img:  # 6 tiles of LeNet5's C1 in one row: wider than tall
        assert img.width > img.height


@pytest.mark.slow
def test_resnet_run_checkpoints_running_statistics_and_draws_the_figures(nnrun_cli, tmp_path) -> None:
    """A tiny ResNet-8 on MNIST digits: batch_stats in the checkpoint, eval reproduces the
    run's test result from it, and plots/ holds the four classifier figures."""
    run_dir = tmp_path / "resnet-run"
    result = nnrun_cli("train", "conf=resnet20_cifar10", "data=mnist", "model.depth=8", *TINY,
                       "data.augment=[]", "trainer.plots=true", "optim.lr=0.05", f"hydra.run.dir={run_dir}")
    assert result.code == 0, result.out
    state, _ = restore_raw(run_dir / "checkpoints", "last")
    stats = state["inner"]["model_state"]["batch_stats"]
    assert set(stats["bn1"]["bn"]) == {"mean", "var"}
    assert float(np.abs(stats["bn1"]["bn"]["mean"]).max()) > 0  # moved away from the zero start
    summary = read_json(run_dir / "summary.json")
    result = nnrun_cli("eval", str(run_dir))
    assert result.code == 0, result.out
    assert read_json(run_dir / "eval.json")["accuracy"] == pytest.approx(summary["test"]["accuracy"], abs=1e-6)
    for png in ("filters.png", "feature_maps.png", "confusion.png", "misclassified.png"):
        assert (run_dir / "plots" / png).is_file(), png
    (run_dir / "plots" / "confusion.png").unlink()
    result = nnrun_cli("plots", str(run_dir), "--last")
    assert result.code == 0 and (run_dir / "plots" / "confusion.png").is_file()


@pytest.mark.parametrize("shortcut,stem", [("A", False), ("B", True)])
def test_resnet_in_chwn_layout_has_the_same_parameters_outputs_and_gradients(shortcut: str, stem: bool) -> None:
    """model.layout=CHWN (patch matmuls) is a storage choice only: same initial parameters,
    same training-mode loss, gradients and BatchNorm statistics as NHWC."""
    import jax
    import jax.numpy as jnp

    from experiments.models.resnet import ResNet
    from experiments.training.driver import compiled_for_one_use

    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 16, 16, 3)), jnp.float32)
    nhwc = ResNet((1, 1, 1), (4, 8, 16), stem, shortcut, 10, 0.9, "NHWC")
    chwn = nhwc.clone(layout="CHWN")
    # everything compiled: op-by-op dispatch of the patch convolutions' pieces took most of this test's
    # time, and so did compiling the initialisers with XLA's optimisations
    v = compiled_for_one_use(jax.jit(nhwc.init))(jax.random.key(0), x)
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(compiled_for_one_use(jax.jit(chwn.init))(jax.random.key(0), x))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))

    def loss(model, params):
        out, upd = model.apply({"params": params, "batch_stats": v["batch_stats"]}, x, train=True,
                               mutable=["batch_stats"])
        return (out ** 2).sum(), upd

    (la, ua), ga = jax.jit(jax.value_and_grad(lambda p: loss(nhwc, p), has_aux=True))(v["params"])
    (lb, ub), gb = jax.jit(jax.value_and_grad(lambda p: loss(chwn, p), has_aux=True))(v["params"])
    assert float(lb) == pytest.approx(float(la), rel=1e-5)
    for a, b in zip(jax.tree.leaves((ga, ua)), jax.tree.leaves((gb, ub))):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-3, atol=1e-3 * float(jnp.abs(a).max()) + 1e-6)
    np.testing.assert_allclose(np.asarray(jax.jit(chwn.apply)(v, x)), np.asarray(jax.jit(nhwc.apply)(v, x)),
                               atol=1e-5)


@pytest.mark.parametrize("backend,expected", [("cpu", "CHWN"), ("gpu", "NHWC")])
def test_resnet_auto_layout_is_patch_matmuls_on_cpu_and_xla_convolutions_elsewhere(backend: str, expected: str,
                                                                                  monkeypatch) -> None:
    import jax

    from experiments.models import DataInfo, build_model
    from experiments.models.resnet import ResNetConfig

    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    assert ResNetConfig().layout == "auto"  # the default
    assert build_model(ResNetConfig(), DataInfo((32, 32, 3), 10)).layout == expected
    explicit = build_model(ResNetConfig(layout="NHWC"), DataInfo((32, 32, 3), 10))
    assert explicit.layout == "NHWC"  # an explicit choice holds


def test_resnet_rejects_an_unknown_layout_naming_the_choices() -> None:
    from experiments.errors import UserError
    from experiments.models.resnet import ResNetConfig

    with pytest.raises(UserError, match=r"model.layout.*'NCHW'.*NHWC, CHWN, auto"):
        ResNetConfig(layout="NCHW")
