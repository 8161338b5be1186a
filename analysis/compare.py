"""`python -m analysis compare RUN_A RUN_B`: do two runs of one config (on another machine, with another device
count, another package set) reach the same verdicts?

Claim by claim: each run's verdict and its effect with its interval. Class by class: the study's share of each
class among the judged members with its seed-level interval, and per setting the dominant class (the setting's
verdict). Per seed: each run's regime. Verdicts agree when they are the same (a verdict's reason aside: "not tested
(...)" is "not tested"); estimates agree when each lies within the other's interval. The verdicts decide: the
runs `agree` unless a claim's verdict or a setting's dominant class differs, whatever the estimates and the
regime do (those are shown, so that a reader sees how near the edge a verdict stands).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from analysis import terminal
from analysis.analyse import Analysis, analyse
from analysis.claims import ALPHA
from analysis.errors import AnalysisError
from analysis.load import config_differences, listed
from analysis.settings import describe_setting, setting_columns
from analysis.stats import CONFIDENCE
from analysis.taxonomy import Parameters

CELL = 44  # the widest text a table cell shows before it is shortened
SAME, DIFFERS = "same", "DIFFERS"


def _short(text: str, width: int = CELL) -> str:
    text = str(text)
    return text if len(text) <= width else text[:width - 3] + "..."


def verdict_word(verdict: str) -> str:
    """The verdict without its reason: 'not tested (no data)' -> 'not tested'."""
    return verdict.split(" (")[0]


def within(a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
    """'within' when each estimate lies within the other's interval (estimate, low, high), 'apart' when one does
    not, 'n/a' without both intervals."""
    if not np.isfinite([*a, *b]).all():
        return "n/a"
    slack = 1e-9  # an interval's float noise (a Wilson bound of 0/n comes out as 3e-17) moves no estimate outside it
    inside = b[1] - slack <= a[0] <= b[2] + slack and a[1] - slack <= b[0] <= a[2] + slack
    return "within" if inside else "apart"


def _claims(a: Analysis, b: Analysis) -> pd.DataFrame:
    other = {c.id: c for c in b.claims}
    rows = []
    for mine in a.claims:
        theirs = other.get(mine.id)
        va, vb = verdict_word(mine.verdict), verdict_word(theirs.verdict) if theirs else "absent"
        estimates = "n/a" if not (mine.test and theirs and theirs.test) else within(
            (mine.test.effect, mine.test.effect_lo, mine.test.effect_hi),
            (theirs.test.effect, theirs.test.effect_lo, theirs.test.effect_hi))
        rows.append({"claim": mine.id, "verdict A": va, "verdict B": vb, "effect A": mine.effect_text or "-",
                     "effect B": (theirs.effect_text if theirs else "") or "-",
                     "verdict": SAME if va == vb else DIFFERS, "estimates": estimates})
    return pd.DataFrame(rows, columns=["claim", "verdict A", "verdict B", "effect A", "effect B", "verdict",
                                       "estimates"])


def _share_text(r) -> str:
    if not r.n:
        return "-"
    bounds = f" [{r.lo:.0%}, {r.hi:.0%}]" if np.isfinite(r.lo) else ""
    return f"{int(r.k)}/{int(r.n)} {r.share:.0%}{bounds}"


def _classes(a: Analysis, b: Analysis) -> pd.DataFrame:
    first, second = a.headline.shares.set_index("class"), b.headline.shares.set_index("class")
    rows = []
    for c in first.index:
        ra, rb = first.loc[c], second.loc[c]
        rows.append({"class": c, "run A": _share_text(ra), "run B": _share_text(rb),
                     "estimates": within((ra.share, ra.lo, ra.hi), (rb.share, rb.lo, rb.hi))})
    return pd.DataFrame(rows, columns=["class", "run A", "run B", "estimates"])


def _settings(a: Analysis, b: Analysis) -> pd.DataFrame:
    columns = setting_columns(a.by)
    keep = [*columns, "dominant"]
    first, second = (x.headline.table[keep] if not x.headline.table.empty else pd.DataFrame(columns=keep)
                     for x in (a, b))
    both = first.merge(second, on=columns, how="left", suffixes=(" A", " B"))  # in A's order, then B's others
    only_b = second.merge(first[columns], on=columns, how="left", indicator=True)
    only_b = only_b[only_b._merge == "left_only"].drop(columns="_merge").rename(columns={"dominant": "dominant B"})
    both = pd.concat([both, only_b], ignore_index=True)
    rows = []
    for _, r in both.iterrows():
        da, db = (r[f"dominant {x}"] if isinstance(r[f"dominant {x}"], str) else "absent" for x in "AB")
        rows.append({"setting": _short(describe_setting(r, columns)), "dominant class A": _short(da or "none judged"),
                     "dominant class B": _short(db or "none judged"), "verdict": SAME if da == db else DIFFERS})
    return pd.DataFrame(rows, columns=["setting", "dominant class A", "dominant class B", "verdict"])


def _seeds(a: Analysis, b: Analysis) -> pd.DataFrame:
    tables = [x.regime.seeds for x in (a, b)]
    if any(t.empty for t in tables):
        return pd.DataFrame(columns=["seed", "regime A", "regime B", "same"])
    keys = [c for c in tables[0].columns if c == "seed" or not (c == "regime" or c.startswith("prior "))]
    both = tables[0][[*keys, "regime"]].merge(tables[1][[*keys, "regime"]], on=keys, how="outer",
                                               suffixes=(" A", " B")).fillna("absent")
    same = [SAME if x.split(" (")[0] == y.split(" (")[0] else DIFFERS for x, y in zip(both["regime A"],
                                                                                       both["regime B"])]
    return both.assign(**{"regime A": both["regime A"].map(_short), "regime B": both["regime B"].map(_short),
                          "same": same})


@dataclasses.dataclass
class Comparison:
    paths: tuple[Path, Path]
    runs: tuple[str, str]  # one line each: where and on what each ran
    claims: pd.DataFrame
    classes: pd.DataFrame
    settings: pd.DataFrame
    seeds: pd.DataFrame

    @property
    def differences(self) -> list[str]:
        """The verdicts that differ: 'claim 2 (supported / inconclusive)', 'fine-tuning LR ... (kept / ...)'."""
        claims = self.claims[self.claims.verdict == DIFFERS]
        settings = self.settings[self.settings.verdict == DIFFERS]
        return ([f"claim {r.claim} ({r['verdict A']} / {r['verdict B']})" for _, r in claims.iterrows()] +
                [f"{r.setting} ({r['dominant class A']} / {r['dominant class B']})" for _, r in settings.iterrows()])

    @property
    def agree(self) -> bool:
        return not self.differences

    def text(self) -> str:
        lines = [f"A: {self.runs[0]}", f"B: {self.runs[1]}", "",
                 "Claims (verdict; effect [95% CI]; estimates: each within the other's interval):",
                 terminal.table(self.claims, ["claim"]), "",
                 "Classes (judged members of each class, share [seed-level 95% CI]):",
                 terminal.table(self.classes, ["class"]), "",
                 "Dominant class per setting:", terminal.table(self.settings, ["setting"])]
        if not self.seeds.empty:
            lines += ["", "Regime per seed:", terminal.table(self.seeds, ["seed"])]
        verdicts = len(self.claims) + len(self.settings)
        if self.agree:
            verdict = (f"The verdicts agree: {len(self.claims)} claims and {len(self.settings)} settings give the same "
                       "verdict in both runs.")
        else:
            verdict = (f"The verdicts DIFFER in {len(self.differences)} of {verdicts}: "
                       f"{'; '.join(self.differences)}. A verdict that a change of machine can flip is fragile.")
        return "\n".join(lines + ["", terminal.wrapped(verdict, "", "")])


def _run_line(a: Analysis) -> str:
    manifest = a.study.stores[0].manifest
    devices = manifest.get("devices") or []
    versions = manifest.get("versions") or {}
    what = ", ".join(f"{k} {v}" for k, v in versions.items())
    where = f"{len(devices)} device(s){' (' + str(devices[0]) + ')' if devices else ''}"
    cpu = manifest.get("machine")  # absent from manifests written before fttrace recorded it
    if cpu:
        code = f", XLA code for {cpu['xla_cpu_max_isa']}" if cpu.get("xla_cpu_max_isa") else ""
        where = f"{cpu.get('isa')} CPU{code}, {where}"
    return _short(f"{a.study.paths[0]}: {where}; {what}", terminal.WIDTH - 3)


def compare(path_a, path_b, parameters: Parameters = Parameters(), by=(), alpha: float = ALPHA,
            confidence: float = CONFIDENCE) -> Comparison:
    """Analyse both runs with the same parameters and set their verdicts side by side; AnalysisError where they
    are not two runs of one config."""
    first, second = Path(path_a), Path(path_b)
    if first.resolve() == second.resolve():
        raise AnalysisError(f"{first}: given as both runs; compare two workdirs")
    a = analyse([first], parameters, by, alpha, confidence)
    b = analyse([second], parameters, by, alpha, confidence)
    differ = config_differences(a.study.stores[0].manifest, b.study.stores[0].manifest)
    if differ:
        raise AnalysisError(f"{first} and {second} hold different configs ({listed(differ)}); compare runs of one "
                            "config")
    if a.by != b.by:
        raise AnalysisError(f"{first} and {second} sweep different axes ({', '.join(a.by) or 'none'} / "
                            f"{', '.join(b.by) or 'none'})")
    return Comparison((first, second), (_run_line(a), _run_line(b)), _claims(a, b), _classes(a, b),
                      _settings(a, b), _seeds(a, b))
