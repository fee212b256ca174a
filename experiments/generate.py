"""Generation from a trained sequence model: text from a language model, chorales (MIDI)
from a piano-roll model.

`load_sequence_model(run_dir)` rebuilds the run's model and restores a checkpoint;
`SequenceModel.step` advances the network by one token and returns the next token's
distribution and the new recurrent state, so sampling and co-composition never re-read the
prefix. A token is a vocabulary id (text) or a chord, the set of keys held at a step
(music: a tuple of MIDI pitches, () for a rest).

Sampling is reproducible from the seed: the randomness is one numpy generator seeded once,
and the distribution at every step is computed the same way on the host.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from experiments.errors import UserError

NOTE_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
SEQUENCE_OBJECTIVES = ("language_model", "piano_roll")
DEFAULT_MUSIC_PRIME = ((48, 64, 67, 72),)  # a C major chord, bass C3


# ---------------------------------------------------------------------------- chords


def note_name(pitch: int) -> str:
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def chord_name(chord: Sequence[int]) -> str:
    return " ".join(note_name(p) for p in chord) if chord else "rest"


def parse_note(word: str) -> int:
    """'60' or 'C4', 'F#3', 'Bb2' -> a MIDI pitch."""
    if word.lstrip("-").isdigit():
        return int(word)
    flats = {"Db": "C#", "Eb": "D#", "Gb": "F#", "Ab": "G#", "Bb": "A#"}
    name = word[:2] if len(word) > 2 and word[1] in "#b" else word[:1]
    octave = word[len(name):]
    name = flats.get(name[:1].upper() + name[1:], name[:1].upper() + name[1:])
    if name not in NOTE_NAMES or not octave.lstrip("-").isdigit():
        raise UserError(f"'{word}' is not a note; write MIDI numbers (60) or names with an octave (C4, F#3, Bb2)")
    return NOTE_NAMES.index(name) + 12 * (int(octave) + 1)


def parse_chords(text: str, lowest: int = 21, keys: int = 88) -> list[tuple[int, ...]]:
    """'C3,E4,G4 60,64 rest' -> chords (steps separated by spaces or '|', notes by commas)."""
    chords = []
    for step in text.replace("|", " ").split():
        notes = () if step.lower() in ("rest", ".", "-") else tuple(sorted({parse_note(w) for w in step.split(",") if w}))
        bad = [p for p in notes if not lowest <= p < lowest + keys]
        if bad:
            raise UserError(f"pitch {bad[0]} is outside the model's keys (MIDI {lowest}-{lowest + keys - 1})")
        chords.append(notes)
    return chords


def top_chords(p_on: np.ndarray, k: int, lowest: int) -> list[tuple[tuple[int, ...], float]]:
    """The k most likely chords under independent per-key probabilities, most likely first,
    exactly: a chord's probability is the most likely chord's times exp(-sum of the
    log-odds magnitudes of the keys it flips), and the k smallest flip sums are enumerated
    best-first over the keys sorted by that cost."""
    p = np.clip(p_on.astype(np.float64), 1e-12, 1 - 1e-12)
    mode = p > 0.5
    log_mode = float(np.sum(np.log(np.where(mode, p, 1 - p))))
    cost = np.abs(np.log(p) - np.log1p(-p))
    order = np.argsort(cost, kind="stable")
    c = cost[order]

    def chord(flips: tuple[int, ...]) -> tuple[int, ...]:
        on = mode.copy()
        for j in flips:
            on[order[j]] = not on[order[j]]
        return tuple(int(i) + lowest for i in np.flatnonzero(on))

    out = [(chord(()), math.exp(log_mode))]
    heap = [(c[0], (0,))] if len(c) else []
    while heap and len(out) < k:
        total, flips = heapq.heappop(heap)
        out.append((chord(flips), math.exp(log_mode - total)))
        last = flips[-1]
        if last + 1 < len(c):  # extend with the next key, or move the last flip one key on
            heapq.heappush(heap, (total + c[last + 1], flips + (last + 1,)))
            heapq.heappush(heap, (total - c[last] + c[last + 1], flips[:-1] + (last + 1,)))
    return out


# ---------------------------------------------------------------------------- the model


@dataclass
class SequenceModel:
    """A trained sequence model, ready to step. `kind` is "text" or "music"."""

    run_dir: Path
    kind: str
    checkpoint: str
    step_index: int  # the checkpoint's training step
    apply_step: Any  # jitted (params, carry, x) -> (logits of the next token, carry)
    params: Any
    zero_carry: Any
    vocab: Any = None  # text: experiments.data.text.Vocabulary
    lowest: int = 21  # music: the MIDI pitch of key 0
    keys: int = 88

    # -- tokens <-> model inputs
    def encode_prime(self, prime: Optional[str]) -> list:
        """The prime as tokens (ids or chords); one-line errors for what the model cannot read."""
        if self.kind == "music":
            return list(DEFAULT_MUSIC_PRIME) if not prime else parse_chords(prime, self.lowest, self.keys)
        if prime is None or prime == "":
            prime = "\n" if "\n" in self.vocab.index else self.vocab.tokens[0]
        ids = self.vocab.encode(prime).tolist()
        if not ids:
            raise UserError("the prime holds no token the model knows; give some text, e.g. --prime 'ROMEO:'")
        return ids

    def _input(self, token) -> np.ndarray:
        if self.kind == "music":
            roll = np.zeros((1, 1, self.keys), np.float32)
            for pitch in token:
                roll[0, 0, pitch - self.lowest] = 1.0
            return roll
        return np.asarray([[token]], np.int32)

    def step(self, carry, token) -> tuple[np.ndarray, Any]:
        """Feed one token: (the next token's distribution, the new state). Text: softmax
        probabilities over the vocabulary; music: each key's probability of sounding."""
        logits, carry = self.apply_step(self.params, carry, self._input(token))
        logits = np.asarray(logits, np.float64)
        if self.kind == "music":
            return 1.0 / (1.0 + np.exp(-logits)), carry
        e = np.exp(logits - logits.max())
        return e / e.sum(), carry

    def feed(self, tokens: list, carry=None) -> tuple[np.ndarray, Any]:
        carry = self.zero_carry if carry is None else carry
        probs = None
        for t in tokens:
            probs, carry = self.step(carry, t)
        return probs, carry

    # -- proposals and sampling
    def proposals(self, probs: np.ndarray, k: int = 10) -> list[tuple[Any, float]]:
        """The k most likely next tokens with their probabilities, most likely first."""
        if self.kind == "music":
            return top_chords(probs, k, self.lowest)
        top = np.argsort(-probs, kind="stable")[:k]
        return [(int(i), float(probs[i])) for i in top]

    def sample(self, probs: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int):
        if self.kind == "music":
            if top_k:  # one of the k most likely chords, in proportion to p^(1/T)
                options = top_chords(probs, top_k, self.lowest)
                w = np.asarray([p for _, p in options]) ** (1.0 / temperature)
                return options[int(rng.choice(len(options), p=w / w.sum()))][0]
            logits = np.log(np.clip(probs, 1e-12, 1)) - np.log(np.clip(1 - probs, 1e-12, 1))
            on = rng.random(len(probs)) < 1.0 / (1.0 + np.exp(-logits / temperature))
            return tuple(int(i) + self.lowest for i in np.flatnonzero(on))
        logp = np.log(np.clip(probs, 1e-300, 1)) / temperature
        if top_k and top_k < len(logp):
            cut = np.sort(logp)[-top_k]
            logp = np.where(logp >= cut, logp, -np.inf)
        w = np.exp(logp - logp.max())
        return int(rng.choice(len(w), p=w / w.sum()))

    def show(self, token) -> str:
        """A token as a person reads it."""
        if self.kind == "music":
            return chord_name(token)
        text = self.vocab.tokens[token]
        return {"\n": "\\n (line break)", " ": "' ' (space)", "\t": "\\t"}.get(text, text)

    def render(self, tokens: list) -> str:
        if self.kind == "music":
            return " | ".join(chord_name(c) for c in tokens)
        return self.vocab.decode(tokens)


def load_sequence_model(run_dir: Path, which: str = "best") -> SequenceModel:
    """Rebuild a run's model and restore its checkpoint; one line when the run is not a
    sequence model (nothing to generate from) or has no checkpoint."""
    import jax

    from experiments.checkpoints import Checkpointer
    from experiments.data import load_dataset
    from experiments.runner import load_experiment
    from experiments.training.driver import build_steps, initial_state

    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist; pass a directory under outputs/")
    exp = load_experiment(run_dir)
    if exp.objective.name not in SEQUENCE_OBJECTIVES or exp.trainer.name != "gradient":
        raise UserError(f"{run_dir} is not a sequence model (model '{exp.model.name}', objective "
                        f"'{exp.objective.name}'); generate and compose need a language or music model run, "
                        "e.g. one of conf=char_shakespeare, word_shakespeare or jsb_lstm")
    data = load_dataset(exp.data)
    steps = build_steps(exp, data)
    if not callable(getattr(steps.model, "run", None)):
        raise UserError(f"{run_dir}: model '{exp.model.name}' cannot be run one step at a time; generate and "
                        "compose need a recurrent sequence model (model=rnn_lm)")
    if not (run_dir / "checkpoints").is_dir():
        raise UserError(f"{run_dir} has no checkpoints/ (the run saved none); train it again or resume it")
    with Checkpointer(run_dir / "checkpoints") as ckpt:
        if ckpt.latest_step(which) is None:
            which = "last" if which == "best" else "best"
        state, step = ckpt.restore(which, initial_state(steps, jax.random.key(exp.seed), data))
    model, variables = steps.model, {"params": state.inner.params, **state.inner.model_state}

    def one_step(params, carry, x):
        logits, carry = model.apply({**variables, "params": params}, x, carry, method="run")
        return logits[0, -1], carry

    first = data.train.sample(1)["x"][:, :1]
    zero = jax.tree.map(lambda a: np.zeros(a.shape, a.dtype),
                        jax.eval_shape(lambda p: model.apply({**variables, "params": p}, first, None,
                                                             method="run")[1], variables["params"]))
    kind = "text" if exp.objective.name == "language_model" else "music"
    vocab = None
    if kind == "text":
        from experiments.data.text import vocabulary

        if "vocab" not in data.meta:
            raise UserError(f"{run_dir}: dataset '{exp.data.name}' keeps no vocabulary; generate needs a text run")
        vocab = vocabulary(data)
    return SequenceModel(run_dir, kind, which, int(step), jax.jit(one_step), variables["params"], zero, vocab,
                         int(data.meta.get("lowest_pitch", 21)), int(data.meta.get("keys", 88)))


# ---------------------------------------------------------------------------- generate


@dataclass
class Generated:
    prime: list
    continuation: list
    text: str  # prime + continuation as text (music: chord names)


def generate(model: SequenceModel, prime: Optional[str], length: int, temperature: float = 1.0,
             top_k: int = 0, seed: int = 0) -> Generated:
    if length < 1:
        raise UserError(f"--length {length}: give a positive number of tokens to generate")
    if not temperature > 0:
        raise UserError(f"--temperature {temperature}: it must be > 0 (1 = the model's own distribution)")
    if top_k < 0:
        raise UserError(f"--top-k {top_k}: it must be >= 0 (0 = no limit)")
    tokens = model.encode_prime(prime)
    probs, carry = model.feed(tokens)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(length):
        token = model.sample(probs, rng, temperature, top_k)
        out.append(token)
        probs, carry = model.step(carry, token)
    return Generated(tokens, out, model.render(tokens + out))


# ---------------------------------------------------------------------------- MIDI


def write_midi(chords: list, path: Path, ticks_per_step: int = 480, velocity: int = 80) -> Path:
    """One quarter note per step: every key of a chord struck at the step and released at
    its end (a key held over steps is struck again, as in the piano-roll data). Written to
    a new file only (exclusive create): an existing file is never overwritten."""
    try:
        import mido
    except ImportError:
        raise UserError("writing MIDI needs mido: pip install 'nnrun[music]'") from None
    mid = mido.MidiFile(ticks_per_beat=ticks_per_step)
    track = mido.MidiTrack()
    mid.tracks.append(track)
    track.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(90), time=0))
    wait = 0
    for chord in chords:
        if not chord:
            wait += ticks_per_step
            continue
        for i, pitch in enumerate(chord):
            track.append(mido.Message("note_on", note=int(pitch), velocity=velocity, time=wait if i == 0 else 0))
        for i, pitch in enumerate(chord):
            track.append(mido.Message("note_off", note=int(pitch), velocity=0, time=ticks_per_step if i == 0 else 0))
        wait = 0
    track.append(mido.MetaMessage("end_of_track", time=wait))
    with open(path, "xb") as f:
        mid.save(file=f)
    return path


def read_midi_chords(path: Path) -> list[tuple[int, ...]]:
    """The chords struck in a MIDI file, in order (what write_midi wrote, rests dropped)."""
    import mido

    chords, current, now, last_on = [], [], 0, None
    for msg in mido.merge_tracks(mido.MidiFile(path).tracks):
        now += msg.time
        if msg.type == "note_on" and msg.velocity > 0:
            if last_on is not None and now != last_on:
                chords.append(tuple(sorted(current)))
                current = []
            current.append(msg.note)
            last_on = now
    if current:
        chords.append(tuple(sorted(current)))
    return chords


def fresh_path(directory: Path, stem: str, suffixes: Sequence[str]) -> Path:
    """`directory/stem` (without suffix) such that no `stem<suffix>` exists yet; -2, -3, ...
    appended otherwise. Callers still create files exclusively, so a race cannot overwrite."""
    directory.mkdir(parents=True, exist_ok=True)
    n, base = 1, stem
    while any((directory / f"{base}{s}").exists() for s in suffixes):
        n += 1
        base = f"{stem}-{n}"
    return directory / base
