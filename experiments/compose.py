"""Co-composition: a person and a trained sequence model write a text or a chorale
together, one token at a time.

The model proposes the most likely next tokens (words, characters or chords) with their
probabilities; the person picks one by number, presses Enter for the top one, types their
own, or undoes the last choice. The network's recurrent state is kept, so a proposal costs
one step; every choice pushes the state it started from, so undo pops it back. Ctrl-D ends
the session and saves it under `<run>/compose/`: the text (or a MIDI file) and a JSON log
of every proposal and choice. A saved session is never overwritten.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from experiments.errors import UserError
from experiments.generate import SequenceModel, fresh_path, parse_chords, write_midi

UNDO = "<"
HELP = {
    "text": "Enter = the top proposal | 1-{k} = that proposal | {undo} = undo | anything else = your own text "
            "(\\n for a line break; start with \\ to type a number or {undo}) | Ctrl-D = save and quit",
    "music": "Enter = the top proposal | 1-{k} = that chord | {undo} = undo | notes = your own chord "
             "(C4,E4,G4 or 60,64,67; 'rest') | Ctrl-D = save and quit",
}


@dataclass
class Choice:
    """What a person answered: `tokens` to add (one, or several typed), and how."""

    how: str  # top | pick | typed | undo
    tokens: list = field(default_factory=list)
    rank: Optional[int] = None  # 1-based rank of a picked proposal


def parse_answer(answer: str, proposals: list, model: SequenceModel) -> Choice:
    """One line of input -> a Choice; a UserError for input the model cannot take."""
    stripped = answer.strip()
    if answer == "" or (stripped == "" and model.kind == "music"):
        return Choice("top", [proposals[0][0]], 1)
    if stripped == UNDO:
        return Choice("undo")
    if stripped.isdigit() and 1 <= int(stripped) <= len(proposals):
        return Choice("pick", [proposals[int(stripped) - 1][0]], int(stripped))
    if model.kind == "music":
        chords = parse_chords(stripped, model.lowest, model.keys)
        if not chords:
            raise UserError("no chord given")
        return Choice("typed", chords)
    text = answer[1:] if answer.startswith("\\") and answer[1:2] != "n" else answer
    text = text.replace("\\n", "\n")
    ids = model.vocab.encode(text).tolist()
    if not ids:
        raise UserError(f"{answer!r} holds no token the model knows")
    return Choice("typed", ids)


class Session:
    """The tokens so far, the network state after them, and a stack of earlier states."""

    def __init__(self, model: SequenceModel, prime: Optional[str], top: int = 10):
        self.model, self.top = model, top
        self.prime = model.encode_prime(prime)
        self.probs, self.carry = model.feed(self.prime)
        self.tokens: list = list(self.prime)
        self.stack: list[tuple[Any, Any, int]] = []
        self.log: list[dict] = []

    def proposals(self) -> list[tuple[Any, float]]:
        return self.model.proposals(self.probs, self.top)

    def apply(self, choice: Choice, proposals: list) -> bool:
        """Take a choice; False when an undo has nothing to undo."""
        entry = {"proposals": [{"token": self._json(t), "shown": self.model.show(t), "p": round(p, 6)}
                               for t, p in proposals], "choice": choice.how}
        if choice.how == "undo":
            if not self.stack:
                return False
            self.carry, self.probs, n = self.stack.pop()
            entry["removed"] = [self._json(t) for t in self.tokens[n:]]
            del self.tokens[n:]
        else:
            self.stack.append((self.carry, self.probs, len(self.tokens)))
            for t in choice.tokens:
                self.probs, self.carry = self.model.step(self.carry, t)
            self.tokens.extend(choice.tokens)
            entry["tokens"] = [self._json(t) for t in choice.tokens]
            entry["rank"] = choice.rank
        entry["text"] = self.model.render(self.tokens[len(self.prime):])
        self.log.append(entry)
        return True

    def _json(self, token: Any) -> Any:
        return list(token) if self.model.kind == "music" else self.model.vocab.tokens[token]

    @property
    def composed(self) -> list:
        return self.tokens[len(self.prime):]

    def save(self, started: str) -> tuple[Path, Path]:
        """The work (text or MIDI) and the JSON log under <run>/compose/, both new files."""
        ext = ".mid" if self.model.kind == "music" else ".txt"
        base = fresh_path(self.model.run_dir / "compose", f"session-{started}", (ext, ".json"))
        work, log = base.with_name(base.name + ext), base.with_name(base.name + ".json")
        if self.model.kind == "music":
            write_midi(self.tokens, work)
        else:
            with open(work, "x", encoding="utf-8") as f:
                f.write(self.model.render(self.tokens))
        record = {"run_dir": str(self.model.run_dir), "checkpoint": self.model.checkpoint,
                  "checkpoint_step": self.model.step_index, "kind": self.model.kind, "started": started,
                  "prime": [self._json(t) for t in self.prime], "result": self.model.render(self.tokens),
                  "choices": sum(1 for e in self.log if e["choice"] != "undo"), "log": self.log}
        with open(log, "x", encoding="utf-8") as f:
            json.dump(record, f, indent=1, ensure_ascii=False)
        return work, log


def _tail(model: SequenceModel, tokens: list, width: int = 600) -> str:
    if model.kind == "music":
        shown = tokens[-12:]
        return ("... | " if len(tokens) > len(shown) else "") + model.render(shown)
    text = model.render(tokens)
    return ("..." if len(text) > width else "") + text[-width:]


def render_proposals(model: SequenceModel, proposals: list) -> str:
    return "\n".join(f"{i:>3}. {model.show(t):<24} {p:7.2%}" for i, (t, p) in enumerate(proposals, 1))


def compose(model: SequenceModel, prime: Optional[str], top: int = 10, read: Callable[[str], str] = input,
            write: Callable[[str], None] = print) -> Optional[tuple[Path, Path]]:
    """The interactive loop; returns the saved files (None when nothing was composed)."""
    if top < 1:
        raise UserError(f"--top {top}: show at least one proposal")
    session = Session(model, prime, top)
    started = time.strftime("%Y%m%d-%H%M%S")
    write(f"co-composing with {model.run_dir.name} ({model.kind}, {model.checkpoint} checkpoint, "
          f"step {model.step_index})")
    write(HELP[model.kind].format(k=top, undo=UNDO))
    try:
        while True:
            proposals = session.proposals()
            write("")
            write("so far: " + _tail(model, session.tokens))
            write(render_proposals(model, proposals))
            try:
                answer = read("your choice> ")
            except EOFError:
                write("")
                break
            try:
                choice = parse_answer(answer, proposals, model)
            except UserError as err:
                write(f"  {err}")
                continue
            if not session.apply(choice, proposals):
                write("  nothing to undo")
    except KeyboardInterrupt:  # Ctrl-C saves too: a person's work is never lost
        write("")
    if not session.log:
        write("nothing composed; no session saved")
        return None
    work, log = session.save(started)
    write(f"saved {work} and {log.name} ({sum(1 for e in session.log if e['choice'] != 'undo')} choices)")
    return work, log
