"""HTML pieces shared by the study report and the stand-alone study pages: the style sheet, escaping, numbers,
verdict badges and tables. Imports nothing of the package, so every page module can use it."""
from __future__ import annotations

import html

import numpy as np
import pandas as pd

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1240px;
       padding: 12px 20px 40px; color: #1d1d1f; line-height: 1.35; }
h1 { font-size: 20px; margin: 6px 0 2px; } h2 { font-size: 17px; margin: 22px 0 6px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 16px 0 4px; }
.meta { color: #555; font-size: 13px; }
.note { background: #fff4d6; border-left: 4px solid #e0a800; padding: 4px 10px; margin: 6px 0; font-size: 13px; }
.flag { color: #9a1c1c; font-weight: 600; }
.overall { font-size: 16px; font-weight: 600; margin: 8px 0; }
ul.settings { columns: 2; column-gap: 28px; font-size: 13px; margin: 4px 0 8px; padding-left: 18px; }
ul.settings li { break-inside: avoid; margin-bottom: 2px; }
table { border-collapse: collapse; font-size: 12.5px; margin: 6px 0; }
th, td { border: 1px solid #d6d6d6; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f3f3f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.v { font-weight: 700; padding: 0 4px; border-radius: 3px; white-space: nowrap; }
.v-yes, .v-supported, .v-holds { background: #d7f2d9; color: #14621c; }
.v-no, .v-refuted, .v-FAILS { background: #f6dada; color: #8a1f1f; }
.v-inconclusive, .v-note { background: #fff0c2; color: #7a5600; }
.v-not-judged, .v-not-tested, .v-untestable-at-this-n { background: #eee; color: #666; }
.caption { font-size: 13px; color: #444; max-width: 1100px; }
img { max-width: 100%; height: auto; border: 1px solid #eee; }
pre { background: #f7f7f9; padding: 8px; font-size: 12px; overflow-x: auto; max-height: 480px; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: 600; }
.definition { font-size: 13px; color: #333; }
"""


def escape(value) -> str:
    return html.escape(str(value))


def number(value) -> str:
    """A number for a table cell: integers as they are, floats with 3 significant decimals, n/a for NaN."""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")


def badge(verdict: str) -> str:
    """The verdict as a coloured badge; its first word (before ' (' or ':') picks the colour."""
    word = str(verdict).split(" (")[0].split(":")[0]
    return f'<span class="v v-{word.replace(" ", "-")}">{escape(verdict)}</span>'


def table(frame: pd.DataFrame, badge_columns=("verdict",)) -> str:
    """`frame` as an HTML table; numbers right-aligned, the `badge_columns` as badges."""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for column, value in zip(frame.columns, record):
            if column in badge_columns:
                cells.append(f"<td>{badge(value)}</td>")
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
                cells.append(f'<td class="num">{escape(number(value))}</td>')
            else:
                cells.append(f"<td>{escape(value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
