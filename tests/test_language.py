"""Language and music models: the text and JSB Chorales datasets, the piano_roll and
language_model objectives, exact top-k chords, MIDI, and `nnrun generate`."""
from __future__ import annotations

import itertools
import math
import pickle
from pathlib import Path

import numpy as np
import pytest

from experiments.errors import UserError
from tests.conftest import assert_one_line_error

TINY_CHAR = [
    "conf=char_shakespeare", "data.max_tokens=20000", "data.window=32", "model.hidden=32", "model.embed=16",
    "trainer.epochs=1", "trainer.batch_size=16", "trainer.max_steps=6", "trainer.log_every=3",
    "trainer.progress=false", "trainer.plots=false", "trainer.eval_batch_size=64",
]


@pytest.fixture(scope="module")
def char_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny character model trained in-process once for this module."""
    from typer.testing import CliRunner

    from cli.main import STATE, app

    base = tmp_path_factory.mktemp("char")
    run_dir = base / "char-run"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setitem(STATE, "debug", False)
        result = CliRunner().invoke(app, ["train", *TINY_CHAR, f"hydra.run.dir={run_dir}"])
    assert result.exit_code == 0, result.stdout
    return run_dir


# ---------------------------------------------------------------------------- text data


def test_char_text_splits_90_10_at_a_boundary_and_windows_take_a_random_phase():
    import jax

    from experiments.data.text import TextConfig, load, vocabulary

    data = load(TextConfig(max_tokens=10_000, window=50))
    train_end, val_end, n = data.meta["splits"]
    assert (train_end, n) == (9000, 10_000) and val_end == 9500
    text = Path(__file__).resolve().parents[1].joinpath("experiments/data/corpora/tinyshakespeare.txt").read_text()
    vocab = vocabulary(data)
    assert vocab.decode(data.train.series) == text[:9000]  # contiguous, unshuffled
    assert vocab.decode(data.test.series) == text[9500:10_000]
    assert len(vocab) == len(set(text[:10_000]))
    phases = {int(data.train.epoch_phase(jax.random.key(k))) for k in range(20)}
    assert len(phases) > 5 and all(0 <= p < 50 for p in phases)
    batch = data.train.gather(data.train.device_arrays(), np.array([0, 3]), 7)
    assert vocab.decode(batch["x"][1]) == text[157:207] and vocab.decode(batch["y"][1]) == text[158:208]


def test_own_text_file_by_path(tmp_path):
    from experiments.data.text import TextConfig, load, vocabulary

    path = tmp_path / "mine.txt"
    path.write_text("the cat sat on the mat.\n" * 40, encoding="utf-8")
    data = load(TextConfig(path=str(path), level="word", window=8, vocab_size=50))
    vocab = vocabulary(data)
    assert set(vocab.tokens) == {"<unk>", "the", "cat", "sat", "on", "mat", ".", "\n"}
    assert vocab.decode(data.train.series[:7]) == "the cat sat on the mat."
    assert len(data.val) >= 1 and len(data.test) >= 1


def test_word_tokens_vocabulary_and_unknown():
    from experiments.data.text import UNK, build_vocabulary, detokenize, tokenize_words

    toks = tokenize_words("KING RICHARD III:\nO'er the hills, my lord's--well!")
    assert toks == ["king", "richard", "iii", ":", "\n", "o'er", "the", "hills", ",", "my", "lord's", "-", "-",
                    "well", "!"]
    assert detokenize(["king", "richard", ":", "\n", "o'er", "the", "hills", "!"], "word") == \
        "king richard:\no'er the hills!"
    vocab = build_vocabulary(["a", "b", "a", "c", "a", "b", "d"], 6, "word", 3)
    assert vocab.tokens == (UNK, "a", "b")  # the 2 most frequent training words + <unk>
    assert vocab.encode("a d c").tolist() == [1, 0, 0]


def test_bigram_baseline_matches_hand_computation():
    from experiments.data.text import bigram_nll, bigram_tables, unigram_nll

    train = np.array([0, 1, 0, 1, 0, 2])
    uni = unigram_nll(train, 3)
    np.testing.assert_allclose(np.exp(-uni), [4 / 9, 3 / 9, 2 / 9])
    nll = bigram_nll(np.array([0, 1, 2]), bigram_tables(train, 3), uni, 0.5)
    # p(1|0) = 0.5 * 2/3 + 0.5 * 3/9 ; p(2|1) = 0.5 * 0/2 + 0.5 * 2/9
    np.testing.assert_allclose(nll, [uni[0], -math.log(0.5 * 2 / 3 + 0.5 / 3), -math.log(0.5 * 2 / 9)], rtol=1e-6)


def test_language_model_objective_reports_baselines_on_the_same_tokens():
    import jax.numpy as jnp

    from experiments.objectives.language_model import LanguageModel

    obj = LanguageModel(baselines=True)
    logits = jnp.zeros((1, 2, 4))
    batch = {"y": jnp.array([[1, 2]]), "unigram_nll": jnp.array([[1.0, 3.0]]),
             "bigram_nll": jnp.array([[0.5, 0.5]]), "mask": jnp.array([[1.0, 0.0]])}
    out = obj.finalize({k: float(v) for k, v in obj.sums(logits, batch).items()})
    assert out["perplexity"] == pytest.approx(4.0)
    assert out["unigram_perplexity"] == pytest.approx(math.e) and out["bigram_perplexity"] == pytest.approx(
        math.exp(0.5))
    with pytest.raises(UserError, match="data.baselines=true"):
        obj.check((1, 2, 4), {"y": (1, 2)})


def test_bad_text_files_are_one_line_errors(nnrun_main, tmp_path):
    from experiments.data.text import read_text

    for i, (content, fragment) in enumerate([(b"", "is empty"), (b"\x89PNG\r\n\x1a\n\x00\x00", "looks binary")]):
        path = tmp_path / "corpus.txt"
        path.write_bytes(content)
        # one process, one run id: two runs in the same second need their own directories
        out = nnrun_main("train", "conf=char_shakespeare", f"data.path={path}", "trainer.progress=false",
                         f"hydra.run.dir={tmp_path / f'run{i}'}")
        assert_one_line_error(out, fragment, str(path))
    for content, fragment in [(b"  \n\n", "is empty"), (b"caf\xe9 au lait " * 100, "not UTF-8")]:
        path.write_bytes(content)
        with pytest.raises(UserError, match=fragment):
            read_text(str(path))
    with pytest.raises(UserError, match="no such file"):
        read_text(str(tmp_path / "missing.txt"))


# ---------------------------------------------------------------------------- music


def test_piano_roll_nll_is_the_sum_of_key_bces_averaged_over_real_steps():
    import jax.numpy as jnp

    from experiments.objectives.piano_roll import PianoRoll

    logits = jnp.array([[[1.0, 2.0], [1.0, -1.0], [5.0, 5.0]]])
    y = jnp.array([[[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]]])
    mask = jnp.array([[1.0, 1.0, 0.0]])  # the third step is padding
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    step1 = -math.log(sig(1.0)) - math.log(sig(2.0))  # both keys right at p > 0.5
    step2 = -math.log(1 - sig(1.0)) - math.log(1 - sig(-1.0))
    obj = PianoRoll()
    out = obj.finalize({k: float(v) for k, v in obj.sums(logits, {"y": y, "mask": mask}).items()})
    assert out["nll_per_step"] == pytest.approx((step1 + step2) / 2, rel=1e-5)
    assert out["frame_accuracy"] == pytest.approx(0.5)


def test_jsb_chorales_piano_rolls_and_masks():
    from experiments.data.jsb_chorales import JSBChoralesConfig, load, read_chorales

    data = load(JSBChoralesConfig())
    raw = read_chorales(None)
    assert (len(data.train), len(data.val), len(data.test)) == (229, 76, 77)
    assert data.train.x.shape[1:] == (159, 88)
    assert data.test.arrays["mask"].sum() == sum(len(c) - 1 for c in raw["test"])
    first = raw["train"][0]
    assert np.flatnonzero(data.train.x[0, 0]).tolist() == [p - 21 for p in first[0]]
    assert np.flatnonzero(data.train.y[0, 0]).tolist() == [p - 21 for p in first[1]]


class _Evil:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_safe_unpickler_reads_int64_scalars_and_refuses_code(nnrun_main, tmp_path):
    from experiments.data.jsb_chorales import safe_unpickle

    good = {"train": [[(np.int64(60), np.int64(64))]], "valid": [], "test": [[(np.int64(-3),)]]}
    assert safe_unpickle(pickle.dumps(good)) == {"train": [[(60, 64)]], "valid": [], "test": [[(-3,)]]}
    original = Path(__file__).resolve().parents[2] / "shared/data/music/jsb_chorales.pickle"
    if original.is_file():  # the benchmark's own file, beside the repository
        from experiments.data.jsb_chorales import read_chorales

        loaded = read_chorales(str(original))
        assert [[list(s) for s in c] for c in loaded["test"]] == read_chorales(None)["test"]

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps({"train": [_Evil(marker)], "valid": [], "test": []}))
    with pytest.raises(pickle.UnpicklingError):
        safe_unpickle(evil.read_bytes())
    out = nnrun_main("train", "conf=jsb_lstm", f"data.path={evil}", "trainer.progress=false")
    assert_one_line_error(out, "refusing to load", "system")
    assert not marker.exists()


def test_top_chords_are_exactly_the_most_likely_subsets():
    from experiments.generate import top_chords

    p = np.array([0.9, 0.6, 0.45, 0.1, 0.02, 0.55])
    brute = []
    for on in itertools.product([0, 1], repeat=len(p)):
        prob = float(np.prod(np.where(np.array(on) == 1, p, 1 - p)))
        brute.append((tuple(i + 40 for i in range(len(p)) if on[i]), prob))
    brute.sort(key=lambda cp: -cp[1])
    got = top_chords(p, 10, 40)
    assert [pr for _, pr in got] == pytest.approx([pr for _, pr in brute[:10]])
    assert [c for c, _ in got] == [c for c, _ in brute[:10]]


def test_midi_round_trip_and_never_overwrites(tmp_path):
    from experiments.generate import parse_chords, read_midi_chords, write_midi

    chords = parse_chords("C3,E4,G4 60,64 rest Bb2,D4")
    assert chords == [(48, 64, 67), (60, 64), (), (46, 62)]
    path = write_midi(chords, tmp_path / "a.mid")
    assert read_midi_chords(path) == [c for c in chords if c]
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_midi([(60,)], path)
    assert path.read_bytes() == before
    with pytest.raises(UserError, match="outside"):
        parse_chords("C9")


# ---------------------------------------------------------------------------- generate


def test_generate_is_reproducible_from_the_seed(char_run, nnrun_main):
    args = ["generate", str(char_run), "--prime", "ROMEO:", "--length", "60", "--temperature", "0.8", "--top-k", "5"]
    first, again, other = (nnrun_main(*args, "--seed", s) for s in ("3", "3", "4"))
    assert first.code == 0, first.err
    assert first.out.startswith("ROMEO:") and len(first.out) == len("ROMEO:") + 60 + 1
    assert first.out == again.out and first.out != other.out


def test_generate_bad_input_is_one_line(char_run, nnrun_main, nnrun_cli, tmp_path):
    assert_one_line_error(nnrun_main("generate", str(char_run), "--prime", "ROMEO \u00e9\u00e8"), "never saw", "'\u00e9'")
    assert_one_line_error(nnrun_main("generate", str(char_run), "--temperature", "0"), "--temperature")
    not_seq = tmp_path / "forecaster"
    not_seq.mkdir()
    cfg = nnrun_cli("train", "conf=timeseries_seed", "--cfg")
    (not_seq / "config.yaml").write_text(cfg.out)
    for command in ("generate", "compose"):
        assert_one_line_error(nnrun_main(command, str(not_seq)), "is not a sequence model")
