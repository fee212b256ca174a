"""Encoder-decoder RNN over integer tokens, with an end-of-sequence token.

The encoder reads the source (padding = token 0, so each example's final state is taken
at its own length); its final state starts the decoder. In training the decoder is fed
the true previous target token (teacher forcing, from the batch's `y`: the gradient
trainer passes the batch entries that __call__ names as keywords; it reads `y`
only when `train` is true). In evaluation it
feeds back its own tokens: greedy decoding, or beam search with `beam: K` (K > 1), and
after the end token it emits padding. Outputs are always (batch, target length, target
vocabulary) so that the `sequence` objective scores them against `y` with its mask:
per-token accuracy and `exact_match` (the whole output, end token included, right).
With beam search the outputs are the best beam's tokens as one-hot scores: accuracy and
exact match are the beam's, the loss is not a likelihood.

Target tokens: 0 pad, 1 start (BOS), 2 end (EOS), then the characters. The decoder is
unrolled over the target length (short targets: an ISO date is 11 tokens).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import linen as nn

from experiments.models import DataInfo, ModelConfig, register_model
from experiments.models.forecaster import CELLS

PAD, BOS, EOS = 0, 1, 2


@dataclass
class Seq2SeqConfig(ModelConfig):
    name: str = "seq2seq"
    cell: str = "lstm"  # simple | lstm | gru
    hidden: int = 128
    embed: int = 32
    source_vocab: int = 128  # source token ids must be below this
    beam: int = 1  # decoding in evaluation: 1 = greedy, K > 1 = beam search with K beams

    def __post_init__(self) -> None:
        from experiments.errors import UserError

        if self.cell not in CELLS:
            raise UserError(f"bad value for 'model.cell': '{self.cell}'; allowed values: {', '.join(CELLS)}")
        for key in ("hidden", "embed", "source_vocab", "beam"):
            if getattr(self, key) < 1:
                raise UserError(f"bad value for 'model.{key}': {getattr(self, key)}; it must be >= 1")


class Seq2Seq(nn.Module):
    cell: str = "lstm"
    hidden: int = 128
    embed: int = 32
    source_vocab: int = 128
    target_vocab: int = 14
    target_length: int = 11
    beam: int = 1

    def setup(self) -> None:
        self.source_embed = nn.Embed(self.source_vocab, self.embed)
        self.encoder = nn.RNN(CELLS[self.cell](self.hidden), return_carry=True)
        self.target_embed = nn.Embed(self.target_vocab, self.embed)
        self.decoder = CELLS[self.cell](self.hidden)
        self.out = nn.Dense(self.target_vocab)

    def __call__(self, x: jnp.ndarray, train: bool = False, y: Optional[jnp.ndarray] = None) -> jnp.ndarray:
        carry = self.encode(x)
        if train and y is not None:
            return self.teacher_forced(carry, y)
        if self.beam > 1:
            return jax.nn.one_hot(self.beam_search(carry, x.shape[0]), self.target_vocab) * 10.0
        return self.greedy(carry, x.shape[0])

    def encode(self, x: jnp.ndarray) -> Any:
        lengths = jnp.maximum(jnp.sum(x != PAD, axis=1), 1)
        carry, _ = self.encoder(self.source_embed(x), seq_lengths=lengths)
        return carry

    def step(self, carry: Any, tokens: jnp.ndarray) -> tuple[Any, jnp.ndarray]:
        carry, h = self.decoder(carry, self.target_embed(tokens))
        return carry, self.out(h)

    def teacher_forced(self, carry: Any, y: jnp.ndarray) -> jnp.ndarray:
        inputs = jnp.concatenate([jnp.full((y.shape[0], 1), BOS, y.dtype), y[:, :-1]], axis=1)
        logits = []
        for t in range(y.shape[1]):
            carry, out = self.step(carry, inputs[:, t])
            logits.append(out)
        return jnp.stack(logits, axis=1)

    def greedy(self, carry: Any, batch: int) -> jnp.ndarray:
        token = jnp.full((batch,), BOS, jnp.int32)
        done = jnp.zeros((batch,), bool)
        pad = jax.nn.one_hot(PAD, self.target_vocab) * 10.0
        logits = []
        for _ in range(self.target_length):
            carry, out = self.step(carry, token)
            out = jnp.where(done[:, None], pad, out)  # after the end token: padding
            token = jnp.argmax(out, -1).astype(jnp.int32)
            done = done | (token == EOS)
            logits.append(out)
        return jnp.stack(logits, axis=1)

    def beam_search(self, carry: Any, batch: int) -> jnp.ndarray:
        """The highest-scoring (sum of log-probabilities) of `beam` hypotheses: (batch, length) tokens."""
        k, v = self.beam, self.target_vocab
        carry = jax.tree.map(lambda c: jnp.repeat(c, k, axis=0), carry)  # (batch * k, ...)
        scores = jnp.tile(jnp.asarray([0.0] + [-1e9] * (k - 1)), (batch, 1))  # one live beam at first
        tokens = jnp.zeros((batch, k, self.target_length), jnp.int32)
        token = jnp.full((batch, k), BOS, jnp.int32)
        done = jnp.zeros((batch, k), bool)
        pad_only = jnp.where(jnp.arange(v) == PAD, 0.0, -1e9)  # a finished beam only extends with padding
        for t in range(self.target_length):
            carry, out = self.step(carry, token.reshape(-1))
            logp = jax.nn.log_softmax(out).reshape(batch, k, v)
            logp = jnp.where(done[..., None], pad_only, logp)
            scores, flat = jax.lax.top_k((scores[..., None] + logp).reshape(batch, k * v), k)
            parent, token = flat // v, (flat % v).astype(jnp.int32)
            rows = (jnp.arange(batch)[:, None] * k + parent).reshape(-1)
            carry = jax.tree.map(lambda c: c[rows], carry)
            tokens = jnp.take_along_axis(tokens, parent[..., None], axis=1).at[:, :, t].set(token)
            done = jnp.take_along_axis(done, parent, axis=1) | (token == EOS)
        best = jnp.argmax(scores, axis=1)
        return jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]


@register_model("seq2seq", schema=Seq2SeqConfig, input_shape="(N, source length) integer tokens",
                description="encoder-decoder RNN: teacher forcing in training; greedy or beam decoding in evaluation")
def build(cfg: Seq2SeqConfig, info: DataInfo) -> Seq2Seq:
    length = info.target_shape[0] if info.target_shape else 1
    return Seq2Seq(cfg.cell, cfg.hidden, cfg.embed, cfg.source_vocab, info.num_classes or 3, length, cfg.beam)
