"""Recurrent networks: the course's cells, stacked, optionally bidirectional, over
variable-length sequences, in three structures.

Cells (`model.cell`):
- `simple`: Y(t) = phi(Wx X(t) + Wy Y(t-1) + b)
- `lstm`:   gates i, f, g, o from one fused matmul; c = f*c + i*g, y = o*tanh(c)
- `gru`:    gates r, z and candidate n; y = (1 - z)*n + z*y

Structures (`model.structure`):
- `seq2vec`: the last output (the last *valid* step under a mask) -> dense: a class or a value.
- `seq2seq`: a prediction at every step (objective `sequence`).
- `vec2seq`: prime on the input's one or few steps, then feed each prediction back as the
  next input for as many steps as the target has (outputs size == input features).

Speed (measured, benchmarks/lstm_speed.py, docs/results.md): one fused [X(t), Y(t-1)] @ W
per step for every gate, a time-major loop (lax.scan over axis 0), and a hand-written
backward pass whose weight gradient is one matmul over all steps.

Masks: a batch's `mask` (batch, time), 1 on real steps and 0 on right padding, freezes the
state over padded steps and zeroes their outputs, so padding never changes a result (for
seq2vec data the batch carries `lengths` (batch,) instead: a `mask` would also weight the
targets in the objective).

Truncated BPTT (`model.carry: true`): each layer's final state is kept in the `carry`
collection (the trainer's `model_state`, so it is checkpointed) and starts the next
training window, without gradient through it; a batch's `first` (batch,) flag restarts a
stream from zeros. Data such as `sine_stream` deliver the windows of each stream in order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.layers import ACTIVATIONS, DenseAct

CELLS = ("simple", "lstm", "gru")
STRUCTURES = ("seq2vec", "seq2seq", "vec2seq")
GATES = {"simple": 1, "lstm": 4, "gru": 3}
NAMES = {"simple": "Simple RNN", "lstm": "LSTM", "gru": "GRU"}


@dataclass
class RNNConfig(ModelConfig):
    name: str = "rnn"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 128
    activation: str = "tanh"  # phi of the simple cell
    layers: int = 1  # stacked recurrent layers
    dropout: float = 0.0  # between stacked layers, in training
    bidirectional: bool = False  # each layer also reads the sequence backwards; outputs concatenated
    structure: str = "seq2vec"  # seq2vec | seq2seq | vec2seq
    carry: bool = False  # truncated BPTT: carry each layer's state across consecutive training windows
    unroll: int = 1  # time steps per iteration of the compiled loop (lax.scan's unroll)
    forget_bias: float = 1.0  # LSTM forget-gate bias at initialisation (remember by default)

    def __post_init__(self) -> None:
        # checked at config validation, before a run directory exists
        from experiments.errors import UserError

        for key, allowed in (("cell", CELLS), ("structure", STRUCTURES), ("activation", tuple(ACTIVATIONS))):
            if getattr(self, key) not in allowed:
                raise UserError(f"bad value for 'model.{key}': '{getattr(self, key)}'; "
                                f"allowed values: {', '.join(allowed)}")
        for key in ("hidden", "layers", "unroll"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'model.{key}': {getattr(self, key)}; it must be >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"bad value for 'model.dropout': {self.dropout}; it must be in [0, 1)")
        if self.structure == "vec2seq" and (self.bidirectional or self.carry):
            raise UserError("model.structure=vec2seq generates forwards from its own outputs: "
                            "set model.bidirectional=false and model.carry=false")


def make_cell(kind: str, hidden: int, activation: str) -> nn.RNNCellBase:
    """Flax's own cell of a kind (the reference implementations the tests compare with)."""
    if kind == "simple":
        return nn.SimpleCell(hidden, activation_fn=ACTIVATIONS[activation])
    if kind == "lstm":
        return nn.OptimizedLSTMCell(hidden)
    if kind == "gru":
        return nn.GRUCell(hidden)
    raise ValueError(kind)


# ----------------------------------------------------------------------------- pure cell maths


def zero_state(kind: str, batch: int, hidden: int, dtype=jnp.float32) -> tuple:
    h = jnp.zeros((batch, hidden), dtype)
    return (h, h) if kind == "lstm" else (h,)


def fused_weights(kind: str, w: dict) -> tuple[jnp.ndarray, jnp.ndarray]:
    """One matrix for [X(t), Y(t-1)] -> every gate's pre-activation, and its bias. The GRU's
    candidate needs X Wx and Y Wy apart (r gates only the latter), so they get separate
    columns: (features + hidden, 4 * hidden) with zero blocks."""
    if kind != "gru":
        return jnp.concatenate([w["ik"], w["hk"]], 0), w["ib"]
    features, hidden = w["ik"].shape[0], w["hk"].shape[0]
    x_rows = jnp.concatenate([w["ik"], jnp.zeros((features, hidden), w["ik"].dtype)], 1)
    h_rows = jnp.concatenate([w["hk"][:, :2 * hidden], jnp.zeros((hidden, hidden), w["hk"].dtype),
                              w["hk"][:, 2 * hidden:]], 1)
    return jnp.concatenate([x_rows, h_rows], 0), jnp.concatenate([w["ib"], jnp.zeros((hidden,), w["ib"].dtype)])


def cell_update(kind: str, act, z: jnp.ndarray, state: tuple, hb) -> tuple:
    """The new state from the fused pre-activations `z` ([X(t), Y(t-1)] W + b): the cell's
    elementwise maths."""
    if kind == "simple":
        return (act(z),)
    if kind == "lstm":
        i, f, g, o = jnp.split(z, 4, axis=-1)
        c = nn.sigmoid(f) * state[0] + nn.sigmoid(i) * jnp.tanh(g)
        return c, nn.sigmoid(o) * jnp.tanh(c)
    zr, zz, xn, hn = jnp.split(z, 4, axis=-1)
    r, u = nn.sigmoid(zr), nn.sigmoid(zz)
    n = jnp.tanh(xn + r * (hn + hb))
    return ((1.0 - u) * n + u * state[-1],)


def recur(kind: str, act, w: dict, state: tuple, x: jnp.ndarray) -> tuple:
    """One step from input `x` (batch, features): the new state."""
    wcat, bias = fused_weights(kind, w)
    return cell_update(kind, act, jnp.concatenate([x, state[-1]], -1) @ wcat + bias, state, w["hb"])


def masked_update(kind: str, act, z: jnp.ndarray, state: tuple, hb, keep) -> tuple:
    """(new state, output) of one step; where `keep` (batch, 1) is False the state is held
    and the output is zero (padding)."""
    new = cell_update(kind, act, z, state, hb)
    if keep is None:
        return new, new[-1]
    new = tuple(jnp.where(keep, a, b) for a, b in zip(new, state))
    return new, jnp.where(keep, new[-1], 0.0)


# Speed (benchmarks/lstm_speed.py, docs/results.md). On XLA's CPU backend one fused
# [X(t), Y(t-1)] @ W per step beats hoisting X Wx out of the loop (slicing the hoisted
# projections inside the loop costs more than the small matmul it saves). The backward
# pass is written by hand: autodiff of lax.scan adds [X(t), Y(t-1)]^T dZ(t) into W's
# gradient at every step; here the loop only carries dY back through Wy^T, and W's
# gradient and the inputs' are one matmul each over all steps after it (as cuDNN does).
@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def recurrence(kind: str, act, unroll: int, x: jnp.ndarray, wcat: jnp.ndarray, bias: jnp.ndarray, hb,
               state: tuple, mask):
    """Run a cell over time-major inputs `x` (time, batch, features) from `state`: (outputs
    (time, batch, hidden), final state). `mask` (time, batch) bool or None."""
    return _recurrence_fwd(kind, act, unroll, x, wcat, bias, hb, state, mask)[0]


def _recurrence_fwd(kind, act, unroll, x, wcat, bias, hb, state, mask):
    def step(s, inputs):
        x_t, m_t = inputs
        z = jnp.concatenate([x_t, s[-1]], -1) @ wcat + bias
        new, y = masked_update(kind, act, z, s, hb, None if m_t is None else m_t[:, None])
        return new, (y, z, s)

    final, (ys, zs, prev) = jax.lax.scan(step, state, (x, mask), unroll=unroll)
    return (ys, final), (x, wcat, hb, mask, zs, prev)


def _recurrence_bwd(kind, act, unroll, residuals, cotangents):
    x, wcat, hb, mask, zs, prev = residuals
    d_ys, d_final = cotangents
    features = x.shape[-1]
    wh_t = wcat[features:].T

    def step(carry, inputs):
        d_state, d_hb = carry
        z_t, prev_t, m_t, dy_t = inputs
        keep = None if m_t is None else m_t[:, None]
        _, pullback = jax.vjp(lambda z, s, b: masked_update(kind, act, z, s, b, keep), z_t, prev_t, hb)
        dz_t, d_prev, dhb_t = pullback((d_state, dy_t))
        d_prev = d_prev[:-1] + (d_prev[-1] + dz_t @ wh_t,)
        return (d_prev, None if hb is None else d_hb + dhb_t), dz_t

    d_hb0 = None if hb is None else jnp.zeros_like(hb)
    (d_state, d_hb), dz = jax.lax.scan(step, (d_final, d_hb0), (zs, prev, mask, d_ys), reverse=True, unroll=unroll)
    xh = jnp.concatenate([x, prev[-1]], -1)
    d_wcat = jnp.einsum("tbi,tbg->ig", xh, dz)
    dx = dz @ wcat[:features].T
    return dx, d_wcat, jnp.sum(dz, (0, 1)), d_hb, d_state, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def scan_layer(kind: str, act, w: dict, x_tm: jnp.ndarray, mask_tm: Optional[jnp.ndarray], state: tuple,
               unroll: int = 1) -> tuple[jnp.ndarray, tuple]:
    """Run a cell over time-major inputs (time, batch, features): (outputs (time, batch,
    hidden), final state). Masked steps keep the state and output zeros."""
    wcat, bias = fused_weights(kind, w)
    return recurrence(kind, act, unroll, x_tm, wcat, bias, w["hb"], state, mask_tm)


def sequence_lengths(x: jnp.ndarray, mask: Optional[jnp.ndarray]) -> jnp.ndarray:
    if mask is None:
        return jnp.full((x.shape[0],), x.shape[1], jnp.int32)
    return jnp.sum(mask, axis=1).astype(jnp.int32)


def last_output(ys: jnp.ndarray, mask: Optional[jnp.ndarray], hidden: int, bidirectional: bool) -> jnp.ndarray:
    """The output after the whole sequence: the forward direction's at the last real step
    (its state is frozen over padding), the backward direction's at step 0."""
    last = sequence_lengths(ys, mask) - 1
    fwd = jnp.take_along_axis(ys[..., :hidden], last[:, None, None], axis=1)[:, 0]
    return jnp.concatenate([fwd, ys[:, 0, hidden:]], -1) if bidirectional else fwd


def reverse_valid(x: jnp.ndarray, lengths: jnp.ndarray) -> jnp.ndarray:
    """Reverse each sequence of (batch, time, ...) within its length; padding stays in place."""
    t = jnp.arange(x.shape[1])
    idx = jnp.where(t[None, :] < lengths[:, None], lengths[:, None] - 1 - t[None, :], t[None, :])
    return jnp.take_along_axis(x, idx.reshape(idx.shape + (1,) * (x.ndim - 2)), axis=1)


# ----------------------------------------------------------------------------- modules


class Kernel(nn.Module):
    """A weight matrix and an optional bias, as parameters `kernel` and `bias`."""

    shape: tuple
    bias: int = 0
    kernel_init: Any = nn.initializers.lecun_normal()
    bias_init: Any = nn.initializers.zeros

    @nn.compact
    def __call__(self) -> tuple:
        k = self.param("kernel", self.kernel_init, self.shape)
        return k, (self.param("bias", self.bias_init, (self.bias,)) if self.bias else None)


def lstm_bias(forget: float):
    def init(key, shape, dtype=jnp.float32):
        hidden = shape[0] // 4
        return jnp.zeros(shape, dtype).at[hidden:2 * hidden].set(forget)  # gate order i, f, g, o
    return init


class CellWeights(nn.Module):
    """One direction of one layer's parameters: `i` (Wx, b: every gate) and `h` (Wy, fused
    gates; the GRU's candidate also has a bias there)."""

    kind: str
    features: int
    hidden: int
    forget_bias: float = 1.0

    @nn.compact
    def __call__(self) -> dict:
        g = GATES[self.kind] * self.hidden
        bias_init = lstm_bias(self.forget_bias) if self.kind == "lstm" else nn.initializers.zeros
        ik, ib = Kernel((self.features, g), g, bias_init=bias_init, name="i")()
        hk, hb = Kernel((self.hidden, g), self.hidden if self.kind == "gru" else 0,
                        kernel_init=nn.initializers.orthogonal(), name="h")()
        return {"ik": ik, "ib": ib, "hk": hk, "hb": hb}


class Recurrent(nn.Module):
    """One recurrent layer over (batch, time, features) -> outputs (batch, time, hidden, or
    2*hidden when it also reads backwards: forward outputs first)."""

    cell: str = "lstm"
    hidden: int = 128
    activation: str = "tanh"
    bidirectional: bool = False
    carry: bool = False
    unroll: int = 1
    forget_bias: float = 1.0

    @property
    def layer_type(self) -> str:
        return ("Bi" if self.bidirectional else "") + NAMES[self.cell]

    @property
    def features(self) -> int:
        return self.hidden * (2 if self.bidirectional else 1)

    def weights(self, features: int, name: str) -> dict:
        return CellWeights(self.cell, features, self.hidden, self.forget_bias, name=name)()

    def initial_state(self, batch: int, train: bool, first: Optional[jnp.ndarray]) -> tuple:
        zeros = zero_state(self.cell, batch, self.hidden)
        if not self.carry:
            return zeros
        kept = self.variable("carry", "state", lambda: zeros)
        if not train or self.is_initializing():  # evaluation windows start from zeros
            return zeros
        if kept.value[0].shape != zeros[0].shape:
            from experiments.errors import UserError

            raise UserError(f"model.carry=true keeps one state per stream ({kept.value[0].shape[0]}) but a training "
                            f"batch has {batch} sequences: use data delivered as streams (e.g. data=sines "
                            "data.target=stream) with trainer.batch_size equal to data.streams")
        state = jax.lax.stop_gradient(kept.value)
        if first is not None:  # a stream that restarts begins from zeros
            state = tuple(jnp.where(first[:, None], 0.0, s) for s in state)
        return state

    @nn.compact
    def __call__(self, x: jnp.ndarray, mask: Optional[jnp.ndarray] = None, train: bool = False,
                 first: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        act = ACTIVATIONS[self.activation]
        state0 = self.initial_state(x.shape[0], train, first)
        m_tm = None if mask is None else jnp.swapaxes(mask, 0, 1).astype(bool)
        w = self.weights(x.shape[-1], "fwd")
        ys, state = scan_layer(self.cell, act, w, jnp.swapaxes(x, 0, 1), m_tm, state0, self.unroll)
        if self.carry and train and not self.is_initializing():
            self.put_variable("carry", "state", state)
        ys = jnp.swapaxes(ys, 0, 1)
        if not self.bidirectional:
            return ys
        lengths = sequence_lengths(x, mask)
        wb = self.weights(x.shape[-1], "bwd")
        back = jnp.swapaxes(reverse_valid(x, lengths), 0, 1)
        ys_b, _ = scan_layer(self.cell, act, wb, back, m_tm, zero_state(self.cell, x.shape[0], self.hidden),
                             self.unroll)
        return jnp.concatenate([ys, reverse_valid(jnp.swapaxes(ys_b, 0, 1), lengths)], -1)


class RecurrentNet(nn.Module):
    """Stacked recurrent layers in one of three structures; a dense layer of `outputs` per
    prediction (classes for a classifier, values for a regressor).

    `outputs` is per prediction; `target_shape` (seq2seq, vec2seq of values) is the shape
    of one example's target, so predictions come out in that shape."""

    cell: str = "lstm"
    hidden: int = 128
    outputs: int = 10
    activation: str = "tanh"
    layers: int = 1
    dropout: float = 0.0
    bidirectional: bool = False
    structure: str = "seq2vec"
    carry: bool = False
    unroll: int = 1
    forget_bias: float = 1.0
    target_shape: tuple = ()

    def layer(self, i: int) -> Recurrent:
        return Recurrent(self.cell, self.hidden, self.activation, self.bidirectional, self.carry, self.unroll,
                         self.forget_bias, name=f"R{i + 1}")

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, mask: Optional[jnp.ndarray] = None,
                 first: Optional[jnp.ndarray] = None, lengths: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        """`mask` (batch, time): real steps of sequences whose targets are per step too (the
        objective weights them by it); `lengths` (batch,): real steps of input sequences
        with one target each (seq2vec), which the objective must not read as weights."""
        if x.ndim == 4:  # images (B, H, W, 1) -> sequences of rows (B, H, W)
            x = x.reshape(x.shape[0], x.shape[1], -1)
        if x.ndim == 2:  # one vector per example: a sequence of one step
            x = x[:, None, :]
        if mask is None and lengths is not None:
            mask = (jnp.arange(x.shape[1])[None, :] < lengths[:, None]).astype(jnp.float32)
        if self.structure == "vec2seq":
            return self.generate(x, train)
        h = x
        for i in range(self.layers):
            if i:
                h = nn.Dropout(self.dropout, deterministic=not train)(h)
            h = self.layer(i)(h, mask=mask, train=train, first=first)
        head = DenseAct(self.outputs, name="Out")
        if self.structure == "seq2vec":
            return head(last_output(h, mask, self.hidden, self.bidirectional))
        y = head(h)  # (B, T, outputs): a prediction at every step
        return y.reshape(y.shape[:2] + tuple(self.target_shape[1:])) if self.target_shape[1:] else y

    def generate(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        """Prime on x's steps, then feed each prediction back as the next input (no dropout:
        the generation loop is one scan over every layer)."""
        act = ACTIVATIONS[self.activation]
        weights = [CellWeights(self.cell, x.shape[-1] if i == 0 else self.hidden, self.hidden, self.forget_bias,
                               name=f"R{i + 1}")() for i in range(self.layers)]
        states, h = [], jnp.swapaxes(x, 0, 1)
        for w in weights:  # priming: the hoisted layer loops
            h, s = scan_layer(self.cell, act, w, h, None, zero_state(self.cell, x.shape[0], self.hidden), self.unroll)
            states.append(s)
        head = DenseAct(self.outputs, name="Out")
        y0 = head(h[-1])
        steps = self.target_shape[0] if self.target_shape else 1
        if steps > 1:
            dense = head.variables["params"]["dense"]

            def step(carry, _):
                states, y = carry
                inp, new = y, []
                for w, s in zip(weights, states):
                    s = recur(self.cell, act, w, s, inp)
                    new.append(s)
                    inp = s[-1]
                y = inp @ dense["kernel"] + dense["bias"]
                return (new, y), y

            _, ys = jax.lax.scan(step, (states, y0), None, length=steps - 1, unroll=self.unroll)
            y = jnp.concatenate([y0[:, None], jnp.swapaxes(ys, 0, 1)], axis=1)
        else:
            y = y0[:, None]
        return y.reshape(y.shape[:2] + tuple(self.target_shape[1:])) if self.target_shape else y[:, 0]


@register_model("rnn", schema=RNNConfig,
                description="recurrent net (simple RNN / LSTM / GRU; stacked, bidirectional, masked): "
                            "seq2vec, seq2seq or vec2seq")
def build(cfg: RNNConfig, info: DataInfo) -> RecurrentNet:
    from experiments.errors import UserError

    target = tuple(info.target_shape)
    if info.num_classes:
        outputs = info.num_classes
    elif cfg.structure == "seq2vec":
        outputs = info.output_size
    else:  # a value (or a vector of values) per step
        outputs = math.prod(target[1:])  # () -> 1
    if cfg.structure == "vec2seq":
        features = info.input_shape[-1]
        if outputs != features or info.num_classes:
            raise UserError(f"model.structure=vec2seq feeds its outputs back as inputs: it needs value targets "
                            f"with as many values per step as the inputs have features ({features}); this data's "
                            f"targets have shape {target}{' (classes)' if info.num_classes else ''}")
    return RecurrentNet(cfg.cell, cfg.hidden, outputs, cfg.activation, cfg.layers, cfg.dropout, cfg.bidirectional,
                        cfg.structure, cfg.carry, cfg.unroll, cfg.forget_bias, target)
