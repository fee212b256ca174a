"""Model shapes and parameter counts, the layer tricks' equivalence, optimizers and schedules."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.errors import UserError
from experiments.models import DataInfo, build_model
from experiments.models.layers import AvgPoolAct, ConvAct
from experiments.models import patch_conv
from experiments.models.patch_conv import CHWN, NHWC, conv_chwn, conv_nhwc, from_layout, to_layout
from experiments.models.lenet5 import LeNet5, LeNet5Config
from experiments.models.rnn import RNNConfig
from experiments.optim import OPTIMIZERS, SCHEDULES, make_optimizer, make_schedule

MNIST = DataInfo((28, 28, 1), 10)


def count(params) -> int:
    return sum(p.size for p in jax.tree.leaves(params))


@pytest.mark.parametrize("layout", [NHWC, CHWN])
def test_lenet5_has_61706_parameters_and_the_paper_shapes(layout):
    model = build_model(LeNet5Config(layout=layout), MNIST)
    x = jnp.zeros((3, 28, 28, 1))
    variables = jax.eval_shape(model.init, jax.random.key(0), x)  # shapes only: nothing compiles
    assert count(variables["params"]) == 61706
    per_layer = {k: count(v) for k, v in variables["params"].items()}
    assert per_layer == {"C1": 156, "C3": 2416, "C5": 48120, "F6": 10164, "Out": 850}
    _, state = jax.eval_shape(lambda v: model.apply(v, x, capture_intermediates=True, mutable=["intermediates"]),
                              variables)
    shapes = {k: v["__call__"][0].shape for k, v in state["intermediates"].items() if k != "__call__"}
    if layout == CHWN:  # batch minor until the dense layers
        shapes = {k: s if len(s) == 2 else (s[3], s[1], s[2], s[0]) for k, s in shapes.items()}
    assert shapes == {"C1": (3, 28, 28, 6), "S2": (3, 14, 14, 6), "C3": (3, 10, 10, 16),
                      "S4": (3, 5, 5, 16), "C5": (3, 1, 1, 120), "F6": (3, 84), "Out": (3, 10)}


@pytest.mark.parametrize("cell,expected", [("simple", 128 * 28 + 128 * 128 + 128 + 1290),
                                           ("lstm", 4 * (128 * 28 + 128 * 128 + 128) + 1290),
                                           ("gru", 3 * (128 * 28 + 128 * 128) + 4 * 128 + 1290)])
def test_recurrent_classifier_cells_have_the_textbook_parameter_counts(cell, expected):
    model = build_model(RNNConfig(cell=cell, hidden=128), DataInfo((28, 28), 10))
    variables = model.init(jax.random.key(0), jnp.zeros((2, 28, 28)))
    assert model.apply(variables, jnp.zeros((5, 28, 28))).shape == (5, 10)
    assert count(variables["params"]) == expected


def test_simple_rnn_cell_follows_the_recurrence():
    """Y_t = tanh(W_x^T X_t + W_y^T Y_{t-1} + b), checked against a hand-written loop."""
    model = build_model(RNNConfig(cell="simple", hidden=5), DataInfo((4, 3), 2))
    x = jax.random.normal(jax.random.key(1), (2, 4, 3))
    variables = model.init(jax.random.key(0), x)
    (p,) = variables["params"]["R1"].values()  # the one cell's parameters
    y = jnp.zeros((2, 5))
    for t in range(4):
        y = jnp.tanh(x[:, t] @ p["i"]["kernel"] + p["i"]["bias"] + y @ p["h"]["kernel"])
    out = variables["params"]["Out"]["dense"]
    np.testing.assert_allclose(model.apply(variables, x), y @ out["kernel"] + out["bias"], rtol=1e-5, atol=1e-6)


def test_unknown_cell_is_a_user_error():
    with pytest.raises(UserError, match="model.cell"):
        build_model(RNNConfig(cell="transformer"), DataInfo((28, 28), 10))


def _xla_conv(x, w, stride, padding):
    return jax.lax.conv_general_dilated(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((4, 12, 12, 1), (5, 5, 1, 3), 1, "VALID"),   # LeNet5's C1 shape class
    ((3, 9, 9, 6), (5, 5, 6, 4), 1, "VALID"),     # C3
    ((2, 5, 5, 4), (5, 5, 4, 7), 1, "VALID"),     # C5: kernel covers the input
    ((2, 9, 7, 3), (3, 3, 3, 5), 1, "SAME"),
    ((2, 11, 10, 2), (3, 2, 2, 4), 2, "SAME"),
    ((2, 11, 11, 2), (3, 3, 2, 4), 2, "VALID"),
])
@pytest.mark.parametrize("impl", ["chwn", "nhwc_per_image", "nhwc"])
@jax.default_matmul_precision("float32")  # GPUs would otherwise use TF32 in both
def test_patch_conv_matches_xla_conv_values_and_gradients(shape, kernel, stride, padding, impl, monkeypatch):
    x = jax.random.normal(jax.random.key(0), shape)
    w = jax.random.normal(jax.random.key(1), kernel)
    if impl == "chwn":
        mine = lambda x, w: from_layout(conv_chwn(to_layout(x, CHWN), w, stride, padding), CHWN)  # noqa: E731
    else:  # XLA's forward, the blocked kernel gradient: one image per block, or the whole batch in one
        monkeypatch.setattr(patch_conv, "PATCH_BLOCK_BYTES", 1 if impl == "nhwc_per_image" else 1 << 20)
        def mine(x, w):
            return conv_nhwc(x, w, (stride, stride), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ref = lambda x, w: _xla_conv(x, w, stride, padding)

    @jax.jit  # one compile per implementation; eager dispatch compiles every op (slow on CPU)
    def outputs_and_grads(x, w):
        def loss(f):  # a weighted sum, so that every output position's gradient differs
            return lambda x, w: jnp.sum(jnp.tanh(f(x, w)) * jnp.arange(1.0, 1 + f(x, w).size).reshape(f(x, w).shape))
        return [(f(x, w), jax.grad(loss(f), (0, 1))(x, w)) for f in (mine, ref)]

    (y_mine, g_mine), (y_ref, g_ref) = outputs_and_grads(x, w)
    np.testing.assert_allclose(y_mine, y_ref, rtol=1e-4, atol=1e-4)
    for a, b in zip(g_mine, g_ref):
        # both are float32 sums in different orders: compare at the gradients' scale
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.abs(b).max()))


@jax.default_matmul_precision("float32")
def test_lenet5_layouts_share_parameters_and_agree():
    x = jax.random.normal(jax.random.key(0), (3, 28, 28, 1))
    y = jnp.array([1, 7, 3])
    nhwc, chwn = LeNet5(layout=NHWC), LeNet5(layout=CHWN)
    variables = jax.jit(nhwc.init)(jax.random.key(1), x)
    assert jax.tree.map(jnp.shape, jax.eval_shape(chwn.init, jax.random.key(1), x)) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_allclose(jax.jit(chwn.apply)(variables, x), jax.jit(nhwc.apply)(variables, x),
                               rtol=1e-5, atol=1e-5)
    loss = lambda m: (lambda v: optax.softmax_cross_entropy_with_integer_labels(m.apply(v, x), y).mean())
    grads = jax.jit(lambda v: (jax.grad(loss(chwn))(v), jax.grad(loss(nhwc))(v)))(variables)
    for a, b in zip(*map(jax.tree.leaves, grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_unknown_layout_is_a_user_error():
    with pytest.raises(UserError, match="model.layout.*allowed values: NHWC, CHWN"):
        LeNet5Config(layout="nchw")


@jax.default_matmul_precision("float32")
def test_full_input_conv_as_matmul_equals_a_real_convolution():
    layer = ConvAct(7, (5, 5))
    x = jax.random.normal(jax.random.key(0), (3, 5, 5, 4))
    variables = layer.init(jax.random.key(1), x)
    k, b = variables["params"]["kernel"], variables["params"]["bias"]
    ref = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")) + b
    np.testing.assert_allclose(layer.apply(variables, x), ref, rtol=1e-5, atol=1e-5)


def test_avg_pool_equals_reduce_window_average():
    x = jax.random.normal(jax.random.key(0), (2, 10, 10, 3))
    ref = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 2, 2, 1), (1, 2, 2, 1), "VALID") / 4
    np.testing.assert_allclose(AvgPoolAct(2).apply({}, x), ref, rtol=1e-6, atol=1e-6)


def optim(name, **kw):
    return OPTIMIZERS.get(name).schema(name=name, **kw)


def schedule(name="constant", **kw):
    return SCHEDULES.get(name).schema(name=name, **kw)


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad"])
def test_every_optimizer_reduces_a_quadratic(name):
    assert name in OPTIMIZERS.names()
    lr = 0.5 if name == "adagrad" else 0.05  # adagrad's rate shrinks with the summed squared gradients
    tx, _ = make_optimizer(optim(name, lr=lr, weight_decay=1e-4, clip_norm=10.0),
                           schedule(), steps_per_epoch=10, epochs=1)
    params = {"w": jnp.array([3.0, -2.0])}
    state = tx.init(params)
    loss = lambda p: jnp.sum(p["w"] ** 2)
    start = loss(params)
    for _ in range(50):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start


def test_schedules_shape_the_learning_rate():
    lr = 0.1
    cosine = make_schedule(schedule("cosine"), lr, steps_per_epoch=10, epochs=10)
    assert float(cosine(0)) == pytest.approx(lr) and float(cosine(100)) == pytest.approx(0.0, abs=1e-7)
    warm = make_schedule(schedule("warmup_cosine", warmup_epochs=1, final_lr_frac=0.0), lr, 10, 10)
    assert float(warm(0)) == 0.0 and float(warm(10)) == pytest.approx(lr)
    step = make_schedule(schedule("step", step_epochs=[2, 4], decay=0.1), lr, 10, 10)
    assert [round(float(step(s)), 6) for s in (0, 19, 20, 40)] == [0.1, 0.1, 0.01, 0.001]
    assert float(make_schedule(schedule(), lr, 10, 10)(55)) == pytest.approx(lr)


def test_gradient_clipping_bounds_the_update():
    tx, _ = make_optimizer(optim("sgd", lr=1.0, clip_norm=1.0), schedule(), 1, 1)
    params = {"w": jnp.zeros(4)}
    updates, _ = tx.update({"w": jnp.full(4, 100.0)}, tx.init(params), params)
    assert float(jnp.linalg.norm(updates["w"])) == pytest.approx(1.0, rel=1e-5)
