"""Offline analysis of fttrace results stores: load, statistics, figures, report.

Depends on numpy, pandas, pyarrow, scipy, statsmodels and matplotlib only (never JAX), so a study's results can be
studied on a laptop:

    python -m analysis report RUNDIR [RUNDIR ...] --out OUTDIR    # OUTDIR/index.html, self-contained
    python -m analysis summary RUNDIR                              # the headline table in the terminal

Modules: load (stores -> Study), measures (per-lineage numbers), wrapper (the indicator and its Thresholds),
stats (bootstrap, Wilson, paired tests, logistic regression), emergence (the headline per setting), claims (the
reference study's claims as tests), analyse (all of it for one study), figures, report (the HTML page), cli.
"""
from analysis.errors import AnalysisError

__all__ = ["AnalysisError"]
