"""`analysis compare RUN_A RUN_B`: two runs of one config that reach the same verdicts (the same planted classes,
other noise: another machine's numerics) exit 0; two that do not exit 1 and name what differs; bad input is one
error line and exit 2."""
import pytest

from analysis.cli import main
from analysis.compare import compare, within
from synthetic_store import Plant, write_store

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

LRS = ("small", "medium", "large")


def _plant(kind, **kwargs):
    return Plant(**{"seeds": 10, "priors": ("high", "low"), "lrs": LRS, "spurious": (0.0,), "kind": kind, **kwargs})


def _wrappers(lr, prior, s):
    return "overwrite" if lr == "large" else "wrapper"


def _overwrites(lr, prior, s):
    return "wrapper" if lr == "small" else "overwrite"


def test_two_runs_that_reach_the_same_verdicts_agree(tmp_path, capsys):
    a = write_store(tmp_path / "a", _plant(_wrappers), seed=0)
    b = write_store(tmp_path / "b", _plant(_wrappers), seed=1)
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "The verdicts agree: 6 claims and 6 settings give the same verdict in both runs." in out
    assert max(len(line) for line in out.splitlines()) <= 120
    found = compare(a, b)
    assert found.agree and set(found.claims.verdict) == {"same"} and set(found.settings.verdict) == {"same"}
    assert set(found.claims["verdict A"]) == {"supported"}
    classes = found.classes.set_index("class")
    assert classes.loc["hidden wrapper", "run A"].startswith("40/60 67% [") and set(classes.estimates) == {"within"}
    assert list(found.seeds.seed) == list(range(10)) and set(found.seeds["regime A"]) == {"in"}


def test_two_runs_whose_verdicts_differ_say_which_and_exit_1(tmp_path, capsys):
    a = write_store(tmp_path / "a", _plant(_wrappers), seed=0)
    b = write_store(tmp_path / "b", _plant(_overwrites, missed=((3, "high"),)), seed=2)
    assert main(["compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    # Claim 2 agrees: the small-LR members of B are still wrappers whose probes read C_PT beyond both nulls.
    assert ("The verdicts DIFFER in 2 of 12: fine-tuning LR medium, prior high, C_Tr 0 (hidden wrapper / overwrite)"
            in out)
    assert max(len(line) for line in out.splitlines()) <= 120
    found = compare(a, b)
    settings = found.settings.set_index("setting")
    medium = settings.loc["fine-tuning LR medium, prior high, C_Tr 0"]
    assert (medium["dominant class A"], medium["dominant class B"], medium.verdict) == ("hidden wrapper",
                                                                                       "overwrite", "DIFFERS")
    assert settings.loc["fine-tuning LR small, prior high, C_Tr 0", "verdict"] == "same"
    seeds = found.seeds.set_index("seed")
    assert seeds.loc[3, "regime B"].startswith("OUTSIDE (prior high: C_FT") and seeds.loc[3, "same"] == "DIFFERS"
    assert seeds.drop(3)["same"].eq("same").all()
    assert found.classes.set_index("class").estimates["overwrite"] == "apart"


def test_estimates_agree_when_each_lies_within_the_others_interval():
    assert within((0.5, 0.4, 0.6), (0.55, 0.45, 0.65)) == "within"
    assert within((0.5, 0.4, 0.6), (0.65, 0.55, 0.75)) == "apart"  # 0.5 lies outside B's interval
    assert within((0.5, float("nan"), float("nan")), (0.5, 0.4, 0.6)) == "n/a"
    # 0 of 44 against 0 of 48: the same zero share, whatever float noise a bound of 0/n carries (3e-17 measured)
    assert within((0.0, 0.0, 0.26), (0.0, 2.7755575615628914e-17, 0.24)) == "within"


@pytest.mark.parametrize("case, message", [
    ("other config", "hold different configs (sweep.seeds)"), ("missing", "no such directory"),
    ("same", "given as both runs")])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path, capsys, case, message):
    a = write_store(tmp_path / "a", _plant(_wrappers, seeds=3))
    b = {"other config": lambda: write_store(tmp_path / "b", _plant(_wrappers, seeds=4)),
         "missing": lambda: tmp_path / "nowhere", "same": lambda: a}[case]()
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analysis: error: ") and message in err and err.count("\n") == 1


def test_wide_tables_are_printed_within_120_columns_with_their_key_repeated():
    from pathlib import Path

    import pandas as pd

    from analysis.compare import Comparison
    priors = [f"prior {p}: C_PT / C_FT" for p in ("high", "medium", "low", "lowest", "none")]
    seeds = pd.DataFrame([{"seed": s, **{p: "0.95 [0.93, 0.97] / 0.31 [0.29, 0.33]" for p in priors},
                           "regime A": "in", "regime B": "in", "same": "same"} for s in range(3)])
    claims = pd.DataFrame([{"claim": "1", "verdict A": "supported", "verdict B": "supported",
                            "effect A": "+0.518 [0.49, 0.55]", "effect B": "+0.52 [0.50, 0.55]", "verdict": "same",
                            "estimates": "within"}])
    empty = pd.DataFrame(columns=["class", "run A", "run B", "estimates"])
    settings = pd.DataFrame(columns=["setting", "dominant class A", "dominant class B", "verdict"])
    text = Comparison((Path("a"), Path("b")), ("a: 1 device(s)", "b: 1 device(s)"), claims, empty, settings,
                      seeds).text()
    assert seeds.to_string(index=False).splitlines()[0].__len__() > 120  # printed plainly it would not fit
    assert max(len(line) for line in text.splitlines()) <= 120
    regime = text[text.index("Regime per seed:"):]
    assert regime.count("seed") >= 3  # the key heads every block of columns
    assert "0.95 [0.93, 0.97] / 0.31 [0.29, 0.33]" in regime and "  (none)" in text
