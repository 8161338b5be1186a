"""`fttrace` command line: a thin layer over library functions.

    fttrace run CONFIG --workdir DIR [--config.KEY=VALUE ...] [-q] [--overwrite]

Bad input (UserError) prints one line `fttrace: error: ...` and exits with status 2; nothing else is touched.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from fttrace.errors import UserError

CONFIG_PREFIX = "--config."


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """Separates `--config.KEY=VALUE` (or `--config.KEY VALUE`) from the other arguments."""
    rest, overrides = [], []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith(CONFIG_PREFIX):
            item = arg[len(CONFIG_PREFIX):]
            if "=" not in item:
                if i + 1 >= len(argv):
                    raise UserError(f"override {arg} has no value")
                item, i = f"{item}={argv[i + 1]}", i + 1
            overrides.append(item)
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fttrace", description="Sweeps of fine-tuning studies, vmapped over "
                                     "members. Config values are overridden with --config.KEY=VALUE.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study config into a workdir")
    run.add_argument("config", help="config file (path.py or path.py:arg)")
    run.add_argument("--workdir", required=True, help="where results.parquet and manifest.json go")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    run.add_argument("--overwrite", action="store_true", help="replace a run of a different config in workdir")
    return parser


def enable_compilation_cache() -> None:
    """Reuse compiled programs across runs of the same shapes (FTTRACE_COMPILATION_CACHE=off disables)."""
    where = os.environ.get("FTTRACE_COMPILATION_CACHE", str(Path.home() / ".cache" / "fttrace" / "xla"))
    if where.lower() in ("", "off", "0", "none"):
        return
    import jax
    jax.config.update("jax_compilation_cache_dir", where)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def cmd_run(args, overrides) -> int:
    from fttrace import config as config_lib
    from fttrace.pipeline import run_study
    from fttrace.summary import headline

    config = config_lib.load(args.config, overrides)
    enable_compilation_cache()
    results = run_study(config, args.workdir, quiet=args.quiet, overwrite=args.overwrite)
    if not args.quiet:
        print(headline(results))
    print(f"results: {results}")
    return 0


COMMANDS = {"run": cmd_run}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        rest, overrides = split_overrides(argv)
        args = parser.parse_args(rest)
        return COMMANDS[args.command](args, overrides)
    except UserError as e:
        print(f"fttrace: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fttrace: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
