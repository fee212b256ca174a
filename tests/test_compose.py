"""`nnrun compose` through a real pseudo-terminal (pexpect): proposals, picks by number,
Enter for the top one, typed tokens, undo, Ctrl-D saving text or MIDI plus a JSON log,
and a saved session never overwritten."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import NNRUN, proc_env

pexpect = pytest.importorskip("pexpect")
# pexpect forks and at once execs `nnrun`: nothing of this process's JAX threads runs in the child
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called:RuntimeWarning")

PROMPT = "your choice> "
TINY = ["trainer.epochs=1", "trainer.progress=false", "trainer.plots=false"]
CHAR = ["conf=char_shakespeare", "data.max_tokens=20000", "data.window=32", "model.hidden=32", "model.embed=16",
        "trainer.batch_size=16", "trainer.max_steps=6", "trainer.log_every=3", "trainer.eval_batch_size=64"]
MUSIC = ["conf=jsb_lstm", "data.train_subset=16", "data.test_subset=8", "model.hidden=16", "model.embed=8",
         "trainer.batch_size=8", "trainer.max_steps=2", "trainer.log_every=2", "trainer.eval_batch_size=80"]


def _train(base: Path, name: str, args: list[str]) -> Path:
    from typer.testing import CliRunner

    from cli.main import STATE, app

    run_dir = base / name
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setitem(STATE, "debug", False)
        result = CliRunner().invoke(app, ["train", *args, *TINY, f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.stdout
    return run_dir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("compose"), "char-run", CHAR)


@pytest.fixture(scope="module")
def music_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _train(tmp_path_factory.mktemp("compose"), "jsb-run", MUSIC)


def _spawn(*args: str):
    child = pexpect.spawn(str(NNRUN), ["compose", *args], env=proc_env(), encoding="utf-8", timeout=180,
                          dimensions=(50, 200))
    child.expect_exact(PROMPT)
    return child


def _proposals(screen: str) -> list[str]:
    """The proposals shown last on the screen: the text after each 'N. '."""
    block = screen.rsplit("so far:", 1)[-1]
    return [m.group(2).rstrip() for m in re.finditer(r"^\s*(\d+)\. (.+?)\s+\d+\.\d\d%\s*$", block, re.M)]


def _answer(child, text: str) -> str:
    child.sendline(text)
    child.expect_exact(PROMPT)
    return child.before


def _finish(child) -> str:
    child.sendeof()  # Ctrl-D
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before


def test_compose_text_pick_enter_type_undo_and_save(text_run):
    run = text_run
    child = _spawn(str(run), "--prime", "ROMEO:")
    first = child.before
    shown = _proposals(first)
    assert len(shown) == 10 and "so far: ROMEO:" in first
    _answer(child, "")  # Enter: the top proposal
    screen = _answer(child, "3")  # the third
    _answer(child, "xy")  # typed characters
    _answer(child, "<")  # undo the typed ones
    _answer(child, "<")  # undo the third pick
    screen = _answer(child, "2")
    assert "so far: ROMEO:" in screen
    out = _finish(child)
    saved = re.search(r"saved (\S+\.txt) and (\S+\.json) \((\d+) choices\)", out.replace("\r\n", " "))
    assert saved, out
    text_file = Path(saved.group(1))
    log = json.loads((text_file.parent / saved.group(2)).read_text())
    assert text_file.parent == run / "compose"

    choices = [e["choice"] for e in log["log"]]
    assert choices == ["top", "pick", "typed", "undo", "undo", "pick"]
    assert log["choices"] == 4 and saved.group(3) == "4"
    assert [e["proposals"][0]["shown"] for e in log["log"]][0] == shown[0]  # what the screen showed
    assert len(log["log"][0]["proposals"]) == 10
    top, second = log["log"][0], log["log"][-1]
    assert top["tokens"] == [top["proposals"][0]["token"]]
    assert second["tokens"] == [second["proposals"][1]["token"]] and second["rank"] == 2
    assert log["log"][2]["tokens"] == ["x", "y"] and log["log"][3]["removed"] == ["x", "y"]
    # the undo restored the state: the proposals after it equal those before the undone choice
    assert log["log"][-1]["proposals"] == log["log"][1]["proposals"]
    expected = "ROMEO:" + top["tokens"][0] + second["tokens"][0]
    assert text_file.read_text() == expected == log["result"]

    # a second session saved in the same second gets new files; the first is untouched
    before = {p.name: p.read_bytes() for p in (run / "compose").iterdir()}
    child = _spawn(str(run), "--prime", "ROMEO:")
    _answer(child, "")
    _finish(child)
    after = {p.name: p.read_bytes() for p in (run / "compose").iterdir()}
    assert len(after) == len(before) + 2 and all(after[k] == v for k, v in before.items())


@pytest.mark.slow  # a second tiny training and terminal session (the MIDI writer itself: test_language.py)
def test_compose_music_saves_the_chosen_chords_as_midi(music_run):
    import mido

    from experiments.generate import read_midi_chords

    child = _spawn(str(music_run), "--prime", "C3,E4,G4,C5")
    shown = _proposals(child.before)
    assert len(shown) == 10
    _answer(child, "")  # the most likely chord
    _answer(child, "2")
    screen = _answer(child, "C4,E4,G4")  # typed by the person
    assert "C4 E4 G4" in screen
    _answer(child, "nonsense")  # not a chord: a message, the session goes on
    _answer(child, "rest")
    out = _finish(child)
    mid = Path(re.search(r"saved (\S+\.mid)", out.replace("\r\n", " ")).group(1))
    log = json.loads(mid.with_suffix(".json").read_text())
    chosen = [tuple(t) for e in log["log"] for t in e.get("tokens", [])]
    assert chosen[2] == (60, 64, 67) and chosen[3] == ()
    assert chosen[0] == tuple(log["log"][0]["proposals"][0]["token"])
    assert chosen[1] == tuple(log["log"][1]["proposals"][1]["token"])
    assert len(mido.MidiFile(mid).tracks) == 1  # opens in a MIDI library
    expected = [(48, 64, 67, 72), *chosen]
    assert read_midi_chords(mid) == [c for c in expected if c]  # the chords in order (the rest is silent)
