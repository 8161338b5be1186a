"""`python -m analysis`: the report and the terminal summary of one study (one store, or the shard stores of a
sweep), and `compare`, the verdicts of two runs of one config side by side (exit status 0 when every verdict
agrees, 1 when one differs). Bad input prints one line, `analysis: error: ...`, and exits with status 2."""
from __future__ import annotations

import argparse
import sys

from analysis import extraction, stories
from analysis.analyse import analyse
from analysis.compare import compare
from analysis.errors import AnalysisError
from analysis.report import write_report
from analysis.taxonomy import Parameters

EXIT_USAGE = 2
EXIT_DIFFER = 1  # compare: a verdict differs between the two runs
# Studies with a page of their own: the workdirs' manifests name the study; the module writes the page and summary.
OWN_PAGES = ((extraction.is_canary_store, extraction), (stories.is_stories_store, stories))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analysis", description="Offline analysis of fttrace results stores.")
    commands = parser.add_subparsers(dest="command", required=True)
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--by", action="append", default=[], metavar="COLUMN",
                         help="also split settings by this results column (e.g. d_model); repeatable")
    options.add_argument("--threshold", action="append", default=[], metavar="NAME=VALUE",
                         help="set a taxonomy parameter (e.g. null_quantile=0.99, noop_accuracy=0.8); repeatable")
    common = argparse.ArgumentParser(add_help=False, parents=[options])
    common.add_argument("rundirs", nargs="+", metavar="RUNDIR",
                        help="fttrace workdir(s); several are analysed together as shards of one sweep")
    report = commands.add_parser("report", parents=[common], help="write OUTDIR/index.html")
    report.add_argument("--out", required=True, metavar="OUTDIR", help="directory for the report")
    summary = commands.add_parser("summary", parents=[common], help="print the answer, a glossary, the regime, the "
                                                                    "taxonomy, the claims and the nulls (within 120 "
                                                                    "columns)")
    summary.add_argument("--csv", metavar="DIR", help="also write every table of the summary at full width as "
                                                      "DIR/NAME.csv")
    pair = commands.add_parser("compare", parents=[options], help="do two runs of one config reach the same "
                                                                  "verdicts? (exit 0: every verdict agrees; 1: one "
                                                                  "differs)")
    pair.add_argument("run_a", metavar="RUN_A", help="fttrace workdir")
    pair.add_argument("run_b", metavar="RUN_B", help="fttrace workdir of the same config")
    return parser


def _local(paths) -> None:
    """The analysis reads workdirs on this machine's file system; a URL (gs://, s3://) is named with what to do."""
    for path in paths:
        if "://" in str(path):
            raise AnalysisError(f"{path}: the analysis reads a workdir on this machine; copy it here first (e.g. "
                                f"`gcloud storage cp -r {path} .`) and name the copy")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        _local([args.run_a, args.run_b] if args.command == "compare" else args.rundirs)
        if args.command == "compare":
            found = compare(args.run_a, args.run_b, Parameters.from_strings(args.threshold), by=args.by)
            print(found.text())
            return 0 if found.agree else EXIT_DIFFER
        for names_study, page in OWN_PAGES:
            if all(names_study(path) for path in args.rundirs):
                if args.by or args.threshold:
                    raise AnalysisError(f"--by and --threshold apply to the wrapper analysis; the {page.STUDY} "
                                        "study's page has fixed cells and no taxonomy parameters")
                if getattr(args, "csv", None):
                    raise AnalysisError(f"--csv applies to the wrapper analysis; the {page.STUDY} study's tables are "
                                        "on its page (report --out DIR)")
                print(f"report: {page.write_report(args.rundirs, args.out)}" if args.command == "report"
                      else page.summary_text(args.rundirs))
                return 0
        analysis = analyse(args.rundirs, Parameters.from_strings(args.threshold), by=args.by)
        if args.command == "report":
            print(f"report: {write_report(analysis, args.out)}")
        else:
            print(analysis.summary_text())
            if args.csv:
                print(f"tables: {len(analysis.write_tables(args.csv))} CSV files in {args.csv}")
    except AnalysisError as e:
        print(f"analysis: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0
