"""The stand-alone page of a study that has a section of its own (the canary study, the stories study): telling its
workdirs by the study their manifest names, reading their rows, `mean [lo, hi]` cells, tables and inline figures,
the blocks a section is made of (templates/section.html) and the page around the section (the section, then the
config and the manifest: templates/study_page.html).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from markupsafe import Markup

from analysis import figures, markup
from analysis.errors import AnalysisError
from analysis.load import config_differences, listed, read_manifest, read_results_file
from analysis.schema import MANIFEST_FILE
from analysis.stats import cell_intervals


def names_study(path, study: str) -> bool:
    """Whether `path` is a workdir whose manifest's config names `study`."""
    file = Path(path) / MANIFEST_FILE
    try:
        return json.loads(file.read_text()).get("config", {}).get("study") == study
    except (OSError, ValueError, AttributeError):
        return False


def read_frames(paths) -> tuple[pd.DataFrame, list[dict]]:
    """Every row of the stores at `paths` as one frame, and their manifests."""
    paths = [Path(p) for p in paths]
    frames = [read_results_file(path) for path in paths]
    manifests = [read_manifest(path) for path in paths]
    for path, manifest in zip(paths[1:], manifests[1:]):
        if differ := config_differences(manifests[0], manifest):
            raise AnalysisError(f"{path} and {paths[0]} hold different configs ({listed(differ)}); a study's page "
                                "reads the shards of one run")
    return pd.concat(frames, ignore_index=True), manifests


def named_intervals(rows: pd.DataFrame, by: list, name: str) -> pd.DataFrame:
    """Per cell of `by`: seeds, the mean over seeds of `rows.value` and its bootstrap interval, as columns name,
    name_lo, name_hi."""
    table = cell_intervals(rows, "value", by)
    return table.rename(columns={"value": name, "value_lo": f"{name}_lo", "value_hi": f"{name}_hi"})


def interval_text(mean, lo, hi, digits: int = 2) -> str:
    """`mean [lo, hi]`; the mean alone without an interval (one seed), n/a without a mean."""
    if not np.isfinite(mean):
        return "n/a"
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if np.isfinite(lo) else ""
    return f"{mean:.{digits}f}{ci}"


def interval_column(table: pd.DataFrame, name: str, digits: int = 2) -> list[str]:
    """The `mean [lo, hi]` text of columns name, name_lo, name_hi of a `named_intervals` table."""
    return [interval_text(*v, digits=digits) for v in zip(table[name], table[f"{name}_lo"], table[f"{name}_hi"])]


def block(title: str = "", caption: str = "", tables=(), flag: str = "", png: str = "") -> dict:
    """One part of a section (templates/section.html): a heading, a caption, tables, a flag line and an inline
    PNG (base64), each left out where empty."""
    return {"title": title, "caption": caption, "tables": [t for t in tables if not t.empty], "flag": flag,
            "png": png}


def captioned_table(title: str, caption: str, table: pd.DataFrame, flag: str = "") -> list[dict]:
    """A titled, captioned table of a section (and a flag line under it, if any); nothing for an empty table."""
    return [] if table.empty else [block(title, caption, [table], flag)]


def figure_block(fig, out: Path, name: str, title: str) -> list[dict]:
    """Write `fig` as out/figures/name.png|svg and return it as an inline figure under a heading; nothing when fig
    is None."""
    if fig is None:
        return []
    return [block(title, png=figures.save(fig, Path(out) / "figures", name)["png_base64"])]


def section_html(section_id: str, title: str, blocks: list[dict]) -> Markup:
    """A page section (`<section id=...>`) from its blocks, through templates/section.html (autoescaped)."""
    return Markup(markup.render("section.html", id=section_id, title=title, blocks=blocks))


def unfinished_lines(paths, manifests: list[dict], frame: pd.DataFrame, phases) -> list[str]:
    """One line per store whose run has not finished: its status and the study's `phases` with no rows yet (in any
    of the stores)."""
    missing = [p for p in phases if p not in set(frame.phase)]
    lines = []
    for path, manifest in zip(paths, manifests):
        status = manifest.get("status", "unknown")
        if status in ("done", "complete"):
            continue
        lines.append(f"{path}: run status {status!r}, not 'complete': these are its results so far"
                     + (f"; no rows yet from {', '.join(missing)}" if missing else ""))
    return lines


def write_page(paths, out, frame: pd.DataFrame, manifests: list[dict], section, phases=()) -> Path:
    """OUT/index.html (analysis/templates/study_page.html): `section(frame, out)` (which writes its figures into
    OUT/figures), the config and the manifest, and what an unfinished run has not written yet (of `phases`); returns
    the page's path."""
    out = Path(out)
    note = "; ".join(unfinished_lines(paths, manifests, frame, phases))
    try:
        out.mkdir(parents=True, exist_ok=True)
        page = markup.render("study_page.html", paths=", ".join(map(str, paths)), members=frame.member.nunique(),
                             seeds=frame.seed.nunique(), status_note=note, section=Markup(section(frame, out)),
                             config=json.dumps(manifests[0].get("config"), indent=2, default=str),
                             manifests=json.dumps(manifests, indent=2, default=str))
        index = out / "index.html"
        index.write_text(page, encoding="utf-8")
    except OSError as e:
        raise AnalysisError(f"cannot write the report into {out}: {e.strerror or e}") from None
    return index
