"""HTML for the study report and the stand-alone study pages: one Jinja2 environment over analysis/templates
(autoescaped: every value from a store is text until a template or `Markup` says otherwise), numbers, verdict badges
and tables. Imports nothing of the package, so every page module can use it."""
from __future__ import annotations

import re

import jinja2
import numpy as np
import pandas as pd
from markupsafe import Markup, escape as _escape

INTERVAL = re.compile(r"\[[^\]]*,[^\]]*\]")  # 'mean [lo, hi]': kept on one line in a table cell


def escape(value) -> str:
    return str(_escape(str(value)))


def number(value) -> str:
    """A number for a table cell: integers as they are, floats with 3 significant decimals, n/a for NaN."""
    if isinstance(value, (int, np.integer)):
        return str(value)
    if not np.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.3f}".rstrip("0").rstrip(".")


def badge(verdict: str) -> Markup:
    """The verdict as a coloured badge; its first word (before ' (' or ':') picks the colour."""
    word = str(verdict).split(" (")[0].split(":")[0]
    return Markup('<span class="v v-{}">{}</span>').format(word.replace(" ", "-"), verdict)


def _cell(column, value, badge_columns) -> tuple[str, str]:
    if column in badge_columns:
        return "badge", str(value)
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return "num", number(value)
    text = str(value)
    return ("ci" if INTERVAL.search(text) else "text"), text


def table(frame: pd.DataFrame, badge_columns=("verdict",)) -> Markup:
    """`frame` as an HTML table; numbers right-aligned, intervals unwrapped, the `badge_columns` as badges."""
    rows = [[_cell(column, value, badge_columns) for column, value in zip(frame.columns, record)]
            for record in frame.itertuples(index=False)]
    return Markup(ENV.get_template("table.html").render(columns=[str(c) for c in frame.columns], rows=rows))


ENV = jinja2.Environment(loader=jinja2.PackageLoader("analysis", "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
ENV.globals.update(table=table, badge=badge, number=number)


def render(template: str, **context) -> str:
    """The page `template` (a file of analysis/templates) filled with `context`."""
    return ENV.get_template(template).render(**context)
