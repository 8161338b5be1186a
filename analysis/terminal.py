"""The terminal's layout: prose wrapped and tables fitted to WIDTH columns. A table wider than that is printed in
column blocks that repeat its key columns (pandas' own wrapping); the full-width tables go to CSV (`--csv DIR`) and
to the report."""
from __future__ import annotations

import textwrap

import pandas as pd

WIDTH = 120


def wrapped(text: str, indent: str = "  ", hanging: str = "    ") -> str:
    """`text` indented and wrapped to WIDTH columns."""
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=hanging, break_on_hyphens=False,
                         break_long_words=True)


def _records(frame: pd.DataFrame) -> str:
    """One block per row, `column: value` wrapped: for a table with a column too wide for any block."""
    blocks = []
    for record in frame.astype(str).to_dict("records"):
        blocks.append("\n".join(wrapped(f"{column}: {value}", "  " if i else "- ", "      ")
                                for i, (column, value) in enumerate(record.items())))
    return "\n".join(blocks)


def table(frame: pd.DataFrame, keys=()) -> str:
    """`frame` within WIDTH columns: its `keys` columns (default: the first) repeat in every block of columns."""
    if frame.empty:
        return "  (none)"
    keys = [k for k in keys if k in frame.columns] or list(frame.columns[:1])
    shown = frame.set_index(keys) if len(frame.columns) > len(keys) else frame
    with pd.option_context("display.max_colwidth", 60, "display.max_columns", None):
        text = shown.to_string(line_width=WIDTH, index=shown is not frame, index_names=True)
    lines = text.splitlines()
    if any(len(line) > WIDTH for line in lines):
        return _records(frame)
    return "\n".join(line.rstrip() for line in lines)
