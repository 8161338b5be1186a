"""Offline analysis of fttrace results stores: load, statistics, figures, report.

Depends on numpy, pandas, pyarrow, scipy, statsmodels and matplotlib only (never JAX), so a study's results can be
studied on a laptop:

    python -m analysis report RUNDIR [RUNDIR ...] --out OUTDIR    # OUTDIR/index.html, self-contained
    python -m analysis summary RUNDIR                              # the same in the terminal
    python -m analysis compare RUN_A RUN_B                         # two runs of one config: the same verdicts?

Modules: schema (the results store's files, columns and run-identity keys, imported by fttrace's engine too),
load (stores -> Study), settings (the cells and their order), measures (per-member numbers), regime (what
the models can do, before any verdict, per seed), taxonomy (one class per fine-tuned member, the nulls and the
Parameters), emergence (the taxonomy's headline per setting), stats (bootstrap, cluster bootstrap over seeds,
Wilson, signed-rank tests and their power, logistic regression with seed-clustered errors), survival (Kaplan-Meier,
log-rank, Cox), revival (survival of reFT against the control), instruments (pruning, attention and patching against
their nulls), claims (the reference study's claims with verdicts and power), components and protocols (studies that
have them), analyse (all of it for one study), compare (two runs of one config side by side), figures, markup (HTML
pieces), report (the HTML page), cli. The canary and stories studies have pages of their own (extraction, stories,
study_page).
"""
from analysis.errors import AnalysisError

__all__ = ["AnalysisError"]
