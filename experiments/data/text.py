"""A text file as a stream of tokens for language models: characters or words.

- `data.path=FILE` (UTF-8 text; default: Tiny Shakespeare, shipped with nnrun, public domain).
- Split at boundaries, never shuffled: the first 90% of the tokens train, the last 10% are
  held out (`data.held_out`); the held-out part's first half validates (picks the best
  checkpoint), its second half is the test split (`data.val_size=0`: all of it is test).
- Training examples are windows of `data.window` tokens with the window shifted by one as
  targets, cut on the device at starts 0, window, 2*window, ... plus a random phase drawn
  each epoch in [0, window), so every offset is seen over the epochs. Held-out windows
  tile their part without a phase.

Tokenisation (`data.level`):
- `char`: every character is a token; the vocabulary is the sorted set of characters in
  the whole file (so the held-out part has no unknown character).
- `word`: the text is lower-cased and cut into words (letters, digits and inner
  apostrophes: "o'er", "king's"), single punctuation marks, and line breaks (one "\\n"
  token each, so the model learns the verse layout); other white space separates tokens
  and is dropped. The vocabulary is the `data.vocab_size - 1` most frequent tokens of the
  training part plus `<unk>`, which every other token becomes. Turning tokens back into
  text (`detokenize`) puts a space between words and none before punctuation.

With `data.baselines=true` (word models) every window also carries, per target token, its
negative log-likelihood under a unigram model (add-one counts of the training part) and an
interpolated bigram model (training counts; the mixing weight is fitted on the validation
part), so the `language_model` objective reports their perplexity on exactly the tokens
the network is scored on.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

import numpy as np

from experiments.data import DataConfig, Dataset, Windows, register_dataset
from experiments.errors import UserError

PACKAGED = Path(__file__).resolve().parent / "corpora" / "tinyshakespeare.txt"
UNK = "<unk>"
LEVELS = ("char", "word")
WORD_PATTERN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|\n|[^\sa-z0-9]")


@dataclass
class TextConfig(DataConfig):
    name: str = "text"
    path: Optional[str] = None  # a UTF-8 text file; null = Tiny Shakespeare (shipped)
    level: str = "char"  # char | word
    vocab_size: int = 10000  # word level: the most frequent N-1 words plus <unk>
    window: int = 128  # tokens per training example
    held_out: float = 0.1  # the last part of the file: validation, then test
    val_size: int = 1  # 0: the whole held-out part is the test split (no validation)
    max_tokens: Optional[int] = None  # keep only the first N tokens (tests, smoke runs)
    baselines: bool = False  # unigram and bigram NLL per target token (see module docstring)

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise UserError(f"bad value for 'data.level': '{self.level}'; allowed values: {', '.join(LEVELS)}")
        if not 0.0 < self.held_out < 1.0:
            raise UserError(f"bad value for 'data.held_out': {self.held_out}; it must be between 0 and 1")
        if self.window < 1 or self.vocab_size < 2:
            raise UserError("data.window must be >= 1 and data.vocab_size >= 2")


# ---------------------------------------------------------------------------- reading


def read_text(path: Optional[str]) -> str:
    """The file's text; one-line errors for a missing, empty or binary file."""
    file = Path(path).expanduser() if path else PACKAGED
    where = f"data.path={path}" if path else f"the packaged {file.name}"
    if not file.is_file():
        raise UserError(f"{where}: no such file; give a UTF-8 text file, e.g. data.path=corpus.txt")
    raw = file.read_bytes()
    if not raw.strip():
        raise UserError(f"{where} is empty; give a text file with some text in it")
    if b"\x00" in raw:
        raise UserError(f"{where} looks binary (it holds NUL bytes); give a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{where} is not UTF-8 text (bad byte at offset {err.start}); "
                        "convert it, e.g. iconv -t utf-8, or give another file") from None


def tokenize_words(text: str) -> list[str]:
    return WORD_PATTERN.findall(text.lower())


def detokenize(tokens: list[str], level: str) -> str:
    """Tokens back to text: characters joined; words spaced, no space before punctuation
    or after a line break."""
    if level == "char":
        return "".join(tokens)
    out: list[str] = []
    for tok in tokens:
        glued = not out or out[-1].endswith("\n") or tok == "\n" or not (tok[0].isalnum() or tok == UNK)
        out.append(tok if glued else " " + tok)
    return "".join(out)


@dataclass(frozen=True)
class Vocabulary:
    """Tokens and their ids; `unk` is the id of <unk> (None for characters)."""

    tokens: tuple[str, ...]
    level: str

    @property
    def index(self) -> dict[str, int]:
        return _index(self.tokens)

    @property
    def unk(self) -> Optional[int]:
        return self.index.get(UNK)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, text: str) -> list[str]:
        return list(text) if self.level == "char" else tokenize_words(text)

    def encode(self, text: str, strict: bool = True) -> np.ndarray:
        """Ids of `text`. Characters outside the vocabulary are an error (`strict`); unknown
        words become <unk>."""
        index, pieces = self.index, self.split(text)
        if self.level == "char":
            missing = sorted({c for c in pieces if c not in index})
            if missing and strict:
                shown = ", ".join(repr(c) for c in missing[:5])
                raise UserError(f"{text[:20]!r}{'...' if len(text) > 20 else ''} holds characters the model never "
                                f"saw ({shown}); use only characters of its training text")
            pieces = [c for c in pieces if c in index]
            return np.asarray([index[c] for c in pieces], np.int32)
        return np.asarray([index.get(w, self.unk) for w in pieces], np.int32)

    def decode(self, ids) -> str:
        return detokenize([self.tokens[int(i)] for i in ids], self.level)


@lru_cache(maxsize=8)
def _index(tokens: tuple[str, ...]) -> dict[str, int]:
    return {t: i for i, t in enumerate(tokens)}


def build_vocabulary(pieces: list[str], train_end: int, level: str, size: int) -> Vocabulary:
    if level == "char":
        return Vocabulary(tuple(sorted(set(pieces))), level)
    counts = Counter(pieces[:train_end])
    counts.pop(UNK, None)
    frequent = [w for w, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: size - 1]]
    return Vocabulary((UNK, *sorted(frequent)), level)


# ---------------------------------------------------------------------------- baselines


def unigram_nll(train: np.ndarray, vocab: int) -> np.ndarray:
    """-log p(token) per vocabulary entry, add-one counts of the training tokens."""
    counts = np.bincount(train, minlength=vocab).astype(np.float64) + 1.0
    return -np.log(counts / counts.sum())


def bigram_tables(train: np.ndarray, vocab: int) -> tuple[dict, np.ndarray]:
    """(count of each (previous, next) pair as a dict keyed prev*vocab+next, count of each previous)."""
    pairs = train[:-1].astype(np.int64) * vocab + train[1:]
    keys, counts = np.unique(pairs, return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist())), np.bincount(train[:-1], minlength=vocab)


def bigram_nll(tokens: np.ndarray, tables: tuple[dict, np.ndarray], uni: np.ndarray, mix: float) -> np.ndarray:
    """-log p(t_i | t_{i-1}) for i >= 1 (index 0 gets the unigram's), with
    p = mix * c(prev, next) / c(prev) + (1 - mix) * p_unigram(next)."""
    pair_counts, prev_counts = tables
    vocab = len(uni)
    prev, nxt = tokens[:-1].astype(np.int64), tokens[1:]
    c = np.fromiter((pair_counts.get(k, 0) for k in (prev * vocab + nxt).tolist()), np.float64, len(nxt))
    p_bi = np.divide(c, prev_counts[prev], out=np.zeros_like(c), where=prev_counts[prev] > 0)
    p = mix * p_bi + (1 - mix) * np.exp(-uni[nxt])
    return np.concatenate([uni[tokens[:1]], -np.log(p)])


def fit_mix(tokens: np.ndarray, tables: tuple[dict, np.ndarray], uni: np.ndarray) -> float:
    """The bigram/unigram mixing weight with the lowest NLL on `tokens` (a grid of 0.05)."""
    grid = np.arange(0.05, 1.0, 0.05)
    return float(min(grid, key=lambda m: bigram_nll(tokens, tables, uni, m).mean()))


class TokenWindows(Windows):
    """Windows of a token stream, with per-position arrays (baseline NLLs) cut alongside
    the targets: `extra[name][i]` belongs to the token at position i of the stream."""

    def __init__(self, series: np.ndarray, length: int, stride: int = 1, starts: Optional[np.ndarray] = None,
                 extra: Optional[dict[str, np.ndarray]] = None):
        super().__init__(series, length, stride, target="shifted", starts=starts)
        self.extra = dict(extra or {})

    def device_arrays(self) -> dict[str, np.ndarray]:
        return {**super().device_arrays(), **{f"extra_{k}": v for k, v in self.extra.items()}}

    def gather(self, arrays: dict, idx, phase=0) -> dict:
        import jax
        import jax.numpy as jnp

        batch = super().gather(arrays, idx, phase)
        starts = jnp.take(arrays["starts"], idx) + phase
        for k in self.extra:
            a = arrays[f"extra_{k}"]
            batch[k] = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(a, s + 1, self.length))(starts)
        return batch

    def sample(self, n: int = 2) -> dict[str, np.ndarray]:
        batch = super().sample(n)
        offsets = self.starts[:n, None] + np.arange(self.length) + 1
        return {**batch, **{k: v[offsets] for k, v in self.extra.items()}}


def _held_windows(series: np.ndarray, window: int, extra: dict) -> TokenWindows:
    """Windows tiling a held-out part (no phase); shorter windows when the part is short."""
    length = min(window, len(series) - 1)
    if length < 1:
        raise UserError(f"a held-out part of {len(series)} tokens is too short; use a longer text or "
                        "a larger data.held_out")
    starts = np.arange(0, len(series) - length, length)
    return TokenWindows(series, length, starts=starts, extra=extra)


@register_dataset("text", schema=TextConfig)
def load(cfg: TextConfig) -> Dataset:
    """a text file (data.path; Tiny Shakespeare by default) as characters or words, windows -> next tokens"""
    text = read_text(cfg.path)
    pieces = list(text) if cfg.level == "char" else tokenize_words(text)
    if cfg.max_tokens:
        pieces = pieces[: cfg.max_tokens]
    n = len(pieces)
    train_end = int(round(n * (1.0 - cfg.held_out)))
    if train_end <= cfg.window + 1 or n - train_end < 3:
        raise UserError(f"the text has {n} {cfg.level} tokens: too few for windows of {cfg.window} and a "
                        f"held-out part of {cfg.held_out:.0%}; use a longer text or a smaller data.window")
    vocab = build_vocabulary(pieces, train_end, cfg.level, cfg.vocab_size)
    index, unk = vocab.index, vocab.unk
    ids = np.asarray([index.get(p, unk) for p in pieces], np.int32)
    val_end = (train_end + n) // 2 if cfg.val_size else train_end
    train, val, test = ids[:train_end], ids[train_end:val_end], ids[val_end:]

    extra = {"train": {}, "val": {}, "test": {}}
    meta = {"vocab": list(vocab.tokens), "level": cfg.level, "tokens": n, "splits": [train_end, val_end, n]}
    if cfg.baselines:
        uni, tables = unigram_nll(train, len(vocab)), bigram_tables(train, len(vocab))
        mix = fit_mix(val if len(val) > 1 else train, tables, uni)
        for name, part in (("train", train), ("val", val), ("test", test)):
            extra[name] = {"unigram_nll": uni[part].astype(np.float32),
                           "bigram_nll": bigram_nll(part, tables, uni, mix).astype(np.float32)}
        meta["bigram_mix"] = mix
    return Dataset(
        cfg.name,
        TokenWindows(train, cfg.window, stride=cfg.window, extra=extra["train"]),
        _held_windows(val, cfg.window, extra["val"]) if len(val) else None,
        _held_windows(test, cfg.window, extra["test"]),
        num_classes=len(vocab),
        meta=meta,
    )


def vocabulary(data: Dataset) -> Vocabulary:
    return Vocabulary(tuple(data.meta["vocab"]), data.meta["level"])
