"""The results store as fttrace writes it and its analysis reads it, defined once and imported by both
(fttrace/engine/results.py writes it; analysis/load.py reads it). Standard library and numpy only: the analysis
installs without JAX.

    WORKDIR/results.parquet   long format: one row per member, phase, step and metric (BASE_COLUMNS), the member's
                              hyperparameters as further columns
    WORKDIR/manifest.json     config, versions, devices, git commit, wall time, status
    WORKDIR/parts/            one Parquet part per group, phase and process, with its checksum
"""
from __future__ import annotations

import numpy as np

RESULTS_FILE = "results.parquet"
MANIFEST_FILE = "manifest.json"
PARTS_DIR = "parts"
BASE_COLUMNS = ("member", "parent", "phase", "step", "metric", "value", "status")
KEY = ["member", "phase", "step", "metric"]  # what identifies a row

# Config keys that change how a run goes, never what it computes: a run resumes under other values of them, and two
# runs that differ only in them are the same run. The phases' and the evaluations' `member_batch` are not among them:
# the width of a vmapped group changes float rounding, and through it, now and then, a logged accuracy.
RESULTS_NEUTRAL = ("checkpoint.every_chunks", "checkpoint.keep", "checkpoint.keep_log_spaced")

Z95 = 1.96  # one-sided 2.5 %: the standard errors a gap must clear to count (`beyond_noise`)


def flat(config: dict, prefix: str = "") -> dict:
    """A nested config dict as {dotted key: value} (an empty section is a value, `{}`)."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def beyond_noise(gap, se) -> np.ndarray:
    """Whether a gap is positive beyond sampling noise: above 1.96 of its standard errors (a gap without variance,
    every draw alike on each side, counts if positive). The regime test of the language-model studies (a rate asked
    minus not asked, a memorised share minus the controls'), written by the engine and read by the analysis."""
    return np.asarray(gap, float) > Z95 * np.asarray(se, float)
