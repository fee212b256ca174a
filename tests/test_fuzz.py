"""Property-based tests of the command line's input handling (hypothesis).

Whatever overrides a user types after `nnrun train conf=<name> --cfg` (schema keys and
made-up ones, values of the wrong type, empty strings, unicode, huge numbers, Hydra's
grammar at its edges), the command either prints a config and exits 0, or fails with
exactly one `nnrun: error:` line and a non-zero exit: never a traceback, never a
warning or a second line. `--cfg` composes and validates without training, so each
example costs one Hydra compose; the examples run in-process through the console
entry (`cli.main.run`, the same one-line error formatting as the real script), and a
few through the real `nnrun` process.
"""
from __future__ import annotations

import contextlib
import io
import sys
from functools import lru_cache

import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is in the `test` extra: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

from conftest import NNRUN, Outcome, nnrun_proc  # noqa: E402

EXPERIMENTS = ("lenet5", "mlp_mnist", "lstm_mnist", "hopfield_letters")
EXAMPLES = 15  # per test and experiment in the default run (~0.1 s each); `-m slow` runs 500 per experiment
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])


@lru_cache(maxsize=None)
def defaults(conf: str) -> dict:
    """Every dotted key of the experiment's composed config (leaves and groups) -> its value."""
    from omegaconf import OmegaConf

    from experiments import hydra_bridge as hb

    cfg = OmegaConf.to_container(hb.task_config(hb.compose(conf, [])[0]), resolve=False)
    found: dict = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                found[f"{prefix}{k}"] = v
                walk(v, f"{prefix}{k}.")

    walk(cfg, "")
    return found


def schema_keys(conf: str) -> tuple[str, ...]:
    return tuple(sorted(defaults(conf)))


def typed_value(default) -> st.SearchStrategy[str]:
    """A value of the default's own type (so that some examples compose): small ints,
    floats, booleans, the same string, or null."""
    if isinstance(default, bool):
        return st.sampled_from(["true", "false"])
    if isinstance(default, int):
        return st.integers(-3, 300).map(str)
    if isinstance(default, float):
        return st.floats(1e-6, 10.0).map(lambda x: f"{x:.6g}")
    if isinstance(default, str):
        return st.just(default if default and "$" not in default else "x")
    return st.just("null")


def run_cli(*args: str) -> Outcome:
    """`nnrun ARGS` through the console entry, in this process."""
    from cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, debug = sys.argv, main.STATE["debug"]
    sys.argv = ["nnrun", *args]
    main.STATE["debug"] = False
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main.run()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv, main.STATE["debug"] = argv, debug
    return Outcome(code, out.getvalue(), err.getvalue())


def check_outcome(outcome: Outcome, overrides: list[str]) -> None:
    """A config on stdout and exit 0, or one error line and a non-zero exit."""
    context = f"overrides {overrides!r}:\nstdout: {outcome.out[-2000:]}\nstderr: {outcome.err[-2000:]}"
    assert "Traceback" not in outcome.err and "Traceback" not in outcome.out, context
    err_lines = [ln for ln in outcome.err.splitlines() if ln.strip()]
    if outcome.code == 0:
        assert not err_lines, context
        assert outcome.out.strip(), context  # the printed config
        assert "seed:" in outcome.out, context
    else:
        assert len(err_lines) == 1, context
        assert err_lines[0].startswith("nnrun: error: "), context
        assert len(err_lines[0]) > len("nnrun: error: ") + 10, context  # says something


# ---------------------------------------------------------------------------- strategies

HUGE = ["1e309", "-1e309", "1" + "0" * 400, "-" + "9" * 40, "nan", "inf", "-inf", "1e-400", "0x10", "1_000",
        "9223372036854775808", "-9223372036854775809", ".5", "5.", "1e3", "+3", "0"]
GRAMMAR = ["", "''", '""', "'unterminated", '"unterminated', "[", "]", "[1,2", "{", "{a:1", "{a: 1}", "[1, 2]",
           "a,b", "1,2,3", "${oc.env:HOME}", "${oc.env:NNRUN_FUZZ_UNSET_VARIABLE}", "${missing.key}", "${seed}",
           "${", "${}", "$", "\\", "\\'", "=", "==", "a=b", "null", "None", "~", "true", "True", "FALSE", "yes",
           "choice(1,2)", "range(1,5)", "interval(0,1)", "glob(*)", "tag(log, interval(0.1, 1))", "sort(3,1)",
           "shuffle(1,2)", "int(3.5)", "float(nan)", "str(1)", "bool(0)", "json:{}", "???", "\t", " ", "  x  ",
           "#comment", "a#b", "@", "//", "..", "/etc/passwd", "../../x", "*", "?", "!", "&", "|", ";", "`id`",
           "$(id)", "%s%n", "{{}}", "\x7f", "\u00e9t\u00e9", "\u6a21\u578b", "\U0001F600", "\u200b", "\ufeff",
           "\u202e", "\r", "\n", "a\nb", "x" * 5000]
KEY_GRAMMAR = ["", ".", "..", "a..b", ".a", "a.", "+", "++", "~", "hydra", "hydra.run", "hydra.run.dir",
               "hydra/launcher", "hydra.job.chdir", "defaults", "_self_", "_target_", "model/", "/model", "model//x",
               "conf", "resume", "seed.x", "model.name.x", "\u00e9", "\U0001F600", "a b", "a=b", "a,b", "${x}", "[0]",
               "trainer.epochs[0]", "optim@x", "model@_global_", "x@y.z"]
GROUPS = ["model", "data", "optim", "schedule", "trainer", "objective", "sweep", "hydra/launcher", "hydra/sweeper"]


def values() -> st.SearchStrategy[str]:
    printable = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
    return st.one_of(
        st.sampled_from(HUGE + GRAMMAR),
        st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.booleans().map(str),
        st.text(printable, max_size=30),
        st.lists(st.integers(-5, 5).map(str), max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
    )


def key_for(conf: str) -> st.SearchStrategy[str]:
    printable = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00=")
    return st.one_of(
        st.sampled_from(schema_keys(conf)),
        st.sampled_from(KEY_GRAMMAR),
        st.sampled_from(GROUPS),
        st.text(printable, min_size=1, max_size=20),
        st.tuples(st.sampled_from(schema_keys(conf)), st.text(printable, min_size=1, max_size=8))
        .map(lambda t: f"{t[0]}.{t[1]}"),
    )


@st.composite
def overrides_for(draw, conf: str) -> list[str]:
    out = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.integers(0, 3)) == 0:  # a well-typed value for a real key: these should compose
            key = draw(st.sampled_from([k for k, v in defaults(conf).items() if not isinstance(v, (dict, list))]))
            out.append(f"{key}={draw(typed_value(defaults(conf)[key]))}")
            continue
        prefix = draw(st.sampled_from(["", "", "", "+", "++", "~"]))
        key = draw(key_for(conf))
        shape = draw(st.sampled_from(["kv", "kv", "kv", "kv", "bare", "delete"]))
        if shape == "bare":
            out.append(prefix + key)
        elif shape == "delete":
            out.append(f"~{key}")
        else:
            out.append(f"{prefix}{key}={draw(values())}")
    return out


# ---------------------------------------------------------------------------- properties


def fuzz_overrides(conf: str, examples: int, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("NNRUN_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.chdir(tmp_path)
    schema_keys(conf)  # composed once, outside the examples

    @settings(max_examples=examples, **FUZZ)
    @given(overrides=overrides_for(conf))
    def check(overrides: list[str]) -> None:
        check_outcome(run_cli("train", f"conf={conf}", *overrides, "--cfg"), overrides)

    check()
    assert not (tmp_path / "outputs").exists()  # --cfg never creates a run


@pytest.mark.parametrize("conf", EXPERIMENTS)
def test_fuzzed_overrides_print_a_config_or_fail_in_one_line(conf: str, tmp_path, monkeypatch) -> None:
    fuzz_overrides(conf, EXAMPLES, tmp_path, monkeypatch)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("conf", EXPERIMENTS)
def test_many_more_fuzzed_overrides(conf: str, tmp_path, monkeypatch) -> None:
    fuzz_overrides(conf, 500, tmp_path, monkeypatch)


def all_schema_keys() -> list[tuple[str, str]]:
    return sorted({(k, c) for c in EXPERIMENTS for k in schema_keys(c)})


@settings(max_examples=2 * EXAMPLES, **FUZZ)
@given(key_conf=st.deferred(lambda: st.sampled_from(all_schema_keys())), value=values())
def test_every_schema_key_with_any_value(key_conf: tuple[str, str], value: str) -> None:
    """Each key of the composed configs, set to values of every kind."""
    key, conf = key_conf
    check_outcome(run_cli("train", f"conf={conf}", f"{key}={value}", "--cfg"), [f"{key}={value}"])


@settings(max_examples=EXAMPLES, **FUZZ)
@given(conf=st.one_of(st.sampled_from(["", "lenet", "LENET5", "lenet5.yaml", "../lenet5", "_base", "model/lenet5",
                                       "\u00e9", "lenet5 ", " lenet5", "lenet5,mlp_mnist", "${x}"]),
                      st.text(min_size=0, max_size=12)))
def test_fuzzed_experiment_names(conf: str) -> None:
    outcome = run_cli("train", f"conf={conf}", "--cfg")
    check_outcome(outcome, [f"conf={conf}"])
    from experiments.config import experiment_names

    if conf not in experiment_names():
        assert outcome.code != 0


def test_a_list_of_numbers_as_a_group_choice_is_named() -> None:
    """Found by the fuzzer: a list of numbers as a config-group choice reached Hydra's
    defaults list, which raised TypeError (exit 1, no override named)."""
    outcome = run_cli("train", "conf=lenet5", "schedule=[0]", "--cfg")
    check_outcome(outcome, ["schedule=[0]"])
    assert outcome.code == 2 and "schedule" in outcome.err, outcome.err


def test_a_config_that_passes_is_really_printed() -> None:
    """The property above could hold vacuously if every input failed: a valid override
    prints the config with the value in it."""
    outcome = run_cli("train", "conf=lenet5", "optim.lr=0.125", "seed=7", "--cfg")
    assert outcome.code == 0, outcome.err
    assert "lr: 0.125" in outcome.out and "seed: 7" in outcome.out


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [
    ["trainer.epochs=1e309"], ["optim.lr=${missing}"], ["seed=\U0001F600"], ["+model.\u6a21\u578b=1"],
    ["trainer.epochs=[1,2"], ["~seed"], ["model=nonexistent"], ["hydra/launcher=nonexistent"], ["optim.lr="],
    ["a,b=1"], ["trainer.epochs=choice(1,2)"], ["seed=" + "9" * 400], ["data.root=\n"],
])
def test_edge_cases_through_the_real_process(overrides: list[str], tmp_path) -> None:
    """The same property for the console script itself (its own stderr, its exit code)."""
    outcome = nnrun_proc("train", "conf=lenet5", *overrides, "--cfg", cwd=tmp_path, NNRUN_OUTPUTS=str(tmp_path / "o"))
    check_outcome(outcome, overrides)
    assert NNRUN.exists()
