"""`fttrace` command line: a thin layer over library functions.

    fttrace run CONFIG --workdir DIR [--config.KEY=VALUE ...] [-q] [--overwrite] [--shard I/N]
                [--distributed | --coordinator HOST:PORT --num-processes N --process-id K]
    fttrace merge DIR [DIR ...] --out DIR [--overwrite]
    fttrace launch ray CONFIG --workdir DIR --shards N [--address ADDR] [--resources JSON] [--config.KEY=VALUE ...]
    fttrace launch skypilot CONFIG --workdir URL --shards N [--gpus TYPE:K] [--spot] [--dry-run] [--config...]
    fttrace bench CONFIG [--config.KEY=VALUE ...] [--out FILE.json]
    fttrace config CONFIG [--config.KEY=VALUE ...]      the resolved config
    fttrace config --diff A B                            the keys on which two configs (files or workdirs) differ
    fttrace status WORKDIR                               phase, progress, ETA and divergences of a run
    fttrace export WORKDIR MEMBER --out PATH [--format npz|hf] [--step S]   one member as .npz or a GPT-2 directory
    fttrace tensorboard WORKDIR [--logdir DIR] [--follow S]   curves per member and cell, hyperparameters
    fttrace wandb WORKDIR [--project P] [--mode offline|online] [--dir D]   a W&B run per member, grouped by study
    fttrace doctor                                       what the environment lacks; the devices JAX sees
    fttrace --version

Bad input (UserError) prints one line `fttrace: error: ...` and exits with status 2; nothing else is touched.
SIGTERM or SIGINT stops `fttrace run` with one line saying how to resume it, exit status 128 + the signal's number.
"""
from __future__ import annotations

import argparse
import json
import contextlib
import os
import signal
import sys
import textwrap
import threading
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


CONFIG_HELP = "config file (path.py or path.py:arg) or a bundled config's name (default, pcfg_counter:small)"
OVERRIDES_HELP = """\
config overrides:
  --config.KEY=VALUE   (or --config.KEY VALUE) sets a config value: KEY is dotted (sweep.seeds, finetune.lr_scale.large),
                       VALUE a Python literal (8, 1e-3, "(1e-3,1e-4)", True) or a plain string, of the type of the
                       default it replaces. `fttrace config CONFIG --config...` prints the result.
"""


def configs_help() -> str:
    """The bundled configs and their variants (CONFIG:VARIANT), for --help."""
    from fttrace.config import bundled_configs
    found = bundled_configs()
    if not found:
        return ""
    lines = ["bundled configs (by name: CONFIG or CONFIG:VARIANT, e.g. `fttrace run default --workdir runs/default`):"]
    for name, summary, variants in found:
        lines.append(f"  {name}")
        lines.append(f"      {textwrap.shorten(summary, 100, placeholder=' ...')}")
        lines += [f"      :{name}  {text}" for name, text in variants.items()]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    import fttrace
    parser = argparse.ArgumentParser(prog="fttrace", description="Sweeps of fine-tuning studies, vmapped over "
                                     "members. Config values are overridden with --config.KEY=VALUE.")
    parser.add_argument("--version", action="version", version=f"fttrace {fttrace.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study config into a workdir", epilog=OVERRIDES_HELP + configs_help(),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("config", help=CONFIG_HELP)
    run.add_argument("--workdir", required=True, help="where results.parquet and manifest.json go")
    run.add_argument("-q", "--quiet", action="store_true", help="no progress display")
    run.add_argument("--overwrite", action="store_true",
                     help="start over: replace whatever run the workdir holds (default: resume a run of the same "
                          "config, refuse any other)")
    run.add_argument("--shard", metavar="I/N", help="run only shard I of N of the grid (lineages dealt round-robin; "
                     "each shard into its own workdir, joined by `fttrace merge`)")
    hosts = run.add_argument_group("multi-host runs (one process per host, all running the same command)")
    hosts.add_argument("--distributed", action="store_true",
                       help="join the other processes as found in the environment (TPU pods, SLURM, Open MPI)")
    hosts.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0 (with --num-processes, "
                       "--process-id)")
    hosts.add_argument("--num-processes", type=int)
    hosts.add_argument("--process-id", type=int)
    merge = sub.add_parser("merge", help="merge the workdirs of a sharded run (--shard) into one results store")
    merge.add_argument("workdirs", nargs="+", metavar="DIR", help="workdirs of the shards")
    merge.add_argument("--out", required=True, help="where the merged results.parquet and manifest.json go")
    merge.add_argument("--overwrite", action="store_true", help="replace results already in --out")
    launch = sub.add_parser("launch", help="run the shards of a study on many machines (Ray or SkyPilot), each "
                            "retried where it fails, and merge them into WORKDIR/merged")
    routes = launch.add_subparsers(dest="route", required=True)
    ray = routes.add_parser("ray", help="each shard a Ray task on a Ray cluster (a local one without --address)",
                            epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sky = routes.add_parser("skypilot", help="each shard a SkyPilot managed job (spot VMs recovered), then a merge "
                            "job; writes the task files into --out-dir", epilog=OVERRIDES_HELP,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    for route in (ray, sky):
        route.add_argument("config", help=CONFIG_HELP)
        route.add_argument("--workdir", required=True, help="where the shards (WORKDIR/shard-I) and the merged "
                           "results (WORKDIR/merged) go: a place every machine reaches")
        route.add_argument("--shards", type=int, required=True, metavar="N", help="how many shards to split the "
                           "grid into")
    ray.add_argument("--address", help="the Ray cluster to join (default: start a local Ray instance)")
    ray.add_argument("--resources", metavar="JSON", help="what each shard's task needs, e.g. '{\"GPU\": 1}' "
                     "(default: one CPU)")
    ray.add_argument("--retries", type=int, default=3, help="attempts after the first, per shard (default 3)")
    sky.add_argument("--gpus", metavar="TYPE:K", help="accelerators of each shard's VM, e.g. H100:1 (default: "
                     "none, a CPU VM)")
    sky.add_argument("--spot", action="store_true", help="spot VMs (preemptions recovered by SkyPilot)")
    sky.add_argument("--restarts", type=int, default=3, help="restarts of a shard after errors of its own "
                     "(default 3; preemptions do not count)")
    sky.add_argument("--out-dir", default="skypilot", help="where the task files go (default ./skypilot)")
    sky.add_argument("--dry-run", action="store_true", help="write the task files and print the commands, "
                     "submit nothing (also DRY_RUN=1)")
    bench = sub.add_parser("bench", help="measure training throughput (vmapped members against one member at a "
                           "time and a plain PyTorch loop), the decoder's (objective=decode) or what stopped "
                           "members cost (objective=compaction) (configs/bench.py)")
    bench.add_argument("config", help=CONFIG_HELP)
    bench.add_argument("--out", metavar="FILE.json", help="also write the results here as JSON")
    config = sub.add_parser("config", help="print a resolved config, or the keys on which two configs differ",
                            epilog=OVERRIDES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_argument("config", nargs="?", help=CONFIG_HELP)
    config.add_argument("--diff", nargs=2, metavar=("A", "B"),
                        help="two configs to compare: config files (path.py[:arg]), bundled configs' names or "
                             "workdirs (their manifest's)")
    status = sub.add_parser("status", help="where a run stands: phases done, the phase running, progress, ETA, "
                            "diverged members")
    status.add_argument("workdir", metavar="WORKDIR")
    export = sub.add_parser("export", help="write one member's model: an .npz of its parameters (fttrace's own "
                            "format) or a Hugging Face GPT-2 directory with its tokenizer (--format hf, needs the "
                            "[hf] extra)")
    export.add_argument("workdir", metavar="WORKDIR")
    export.add_argument("member", metavar="MEMBER", help="a member id, as in fttrace.open(WORKDIR).members")
    export.add_argument("--out", required=True, help="the .npz file, or the directory of the Hugging Face model")
    export.add_argument("--format", choices=("npz", "hf"), default="npz")
    export.add_argument("--step", type=int, help="a step the member's phase kept a checkpoint at (default its "
                        "newest)")
    board = sub.add_parser("tensorboard", help="write a workdir's curves (running or finished) as TensorBoard event "
                           "files: a run per member with its settings (HPARAMS tab), and each cell's mean and 10th, "
                           "50th and 90th percentiles (needs the [tensorboard] extra)")
    board.add_argument("workdir", metavar="WORKDIR")
    board.add_argument("--logdir", help="where the event files go (default WORKDIR/tensorboard; rebuilt each time)")
    board.add_argument("--follow", type=float, metavar="SECONDS",
                       help="keep appending the steps that arrive, polling every SECONDS, until interrupted")
    wb = sub.add_parser("wandb", help="write a workdir's members (running or finished) as Weights & Biases runs: one "
                        "per member, grouped by study, its settings as config, its curves over each phase's step, its "
                        "last measures as summary (needs the [wandb] extra)")
    wb.add_argument("workdir", metavar="WORKDIR")
    wb.add_argument("--project", help="the W&B project (default fttrace)")
    wb.add_argument("--mode", choices=("offline", "online"),
                    help="offline: write the runs for `wandb sync` (default: W&B's setting, WANDB_MODE or online)")
    wb.add_argument("--dir", help="where W&B writes its files (default: W&B's, WANDB_DIR or the current directory)")
    sub.add_parser("doctor", help="what this environment lacks to run fttrace: each required and optional package "
                   "(installed version or missing, the supported range, the extra that brings it) and the backend "
                   "and devices JAX sees; exit status 1 when a core package is missing or out of range")
    return parser


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """`I/N` -> (I, N) with 0 <= I < N."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise UserError(f"--shard {text}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
    return int(index), int(count)


def join_processes_from_flags(args) -> None:
    """Connect a multi-host run's processes; must come before anything touches a JAX backend."""
    explicit = (args.coordinator, args.num_processes, args.process_id)
    if any(v is not None for v in explicit) and any(v is None for v in explicit):
        raise UserError("--coordinator, --num-processes and --process-id go together")
    from fttrace.engine.placement import join_processes
    join_processes(*explicit, auto=args.distributed)


def enable_compilation_cache() -> None:
    """Reuse compiled programs across runs of the same shapes (FTTRACE_COMPILATION_CACHE=off disables).

    Programs that compile in under a second are not cached unless JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS says
    otherwise (0 caches everything: what short repeated runs such as tests want).
    """
    where = os.environ.get("FTTRACE_COMPILATION_CACHE", str(Path.home() / ".cache" / "fttrace" / "xla"))
    if where.lower() in ("", "off", "0", "none"):
        return
    import jax
    jax.config.update("jax_compilation_cache_dir", where)
    # Set explicitly: JAX reads the variable only when it is imported, which may have happened before it was set.
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", 1.0)))


class Stopped(BaseException):
    """A signal asked `fttrace run` to stop (a BaseException, as KeyboardInterrupt: no `except Exception` keeps the
    run going). Raised where the run is, it unwinds it: the temporary file of a write under way is removed, the
    workdir's lock released; the checkpoints already written stay."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.code = 128 + signum


@contextlib.contextmanager
def stopped_by_signals():
    """SIGTERM and SIGINT raise `Stopped` while the block runs (the handlers before it come back after)."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread receives signals
        yield
        return

    def stop(signum, frame):
        raise Stopped(signum)
    before = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def cmd_run(args, overrides) -> int:
    with stopped_by_signals():
        import jax

        from fttrace import config as config_lib

        shard = parse_shard(args.shard)
        join_processes_from_flags(args)
        config = config_lib.load(args.config, overrides)
        enable_compilation_cache()
        from fttrace.engine.runner import run_study, study_kind

        results = run_study(config, args.workdir, quiet=args.quiet, overwrite=args.overwrite, shard=shard)
        if not args.quiet and jax.process_index() == 0:
            print(study_kind(config).final_lines(results))
        print(f"results: {results}")
        return 0


def cmd_merge(args, overrides) -> int:
    from fttrace.tools.merge import merge_workdirs

    if overrides:
        raise UserError("merge takes no --config overrides")
    print(f"results: {merge_workdirs(args.workdirs, args.out, overwrite=args.overwrite)}")
    return 0


def cmd_launch(args, overrides) -> int:
    if args.route == "ray":
        from fttrace.tools.launch_ray import launch_ray, parse_resources
        results = launch_ray(main, args.config, args.workdir, args.shards, overrides, address=args.address,
                             resources=parse_resources(args.resources), retries=args.retries)
        print(f"results: {results}")
        return 0
    from fttrace.tools.skypilot import launch_skypilot
    dry = args.dry_run or os.environ.get("DRY_RUN", "0") == "1"
    launch_skypilot(args.config, args.workdir, args.shards, overrides, out_dir=args.out_dir, gpus=args.gpus,
                    spot=args.spot, restarts=args.restarts, dry_run=dry)
    return 0


def cmd_bench(args, overrides) -> int:
    from fttrace import config as config_lib
    from fttrace.engine.results import write_json

    config = config_lib.load(args.config, overrides)
    if config.get("objective") == "decode":
        from fttrace.bench.decode import format_decode_table as format_table, run_decode_bench as run_bench
    elif config.get("objective") == "compaction":
        from fttrace.bench.compaction import (format_compaction_table as format_table,
                                              run_compaction_bench as run_bench)
    else:
        from fttrace.bench.throughput import format_table, run_bench
    report = run_bench(config, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(format_table(report))
    if args.out:
        write_json(args.out, report)
        print(f"results: {args.out}")
    return 0


def resolved_config(spec: str, overrides=()) -> dict:
    """A config file's resolved values, or a workdir's (from its manifest), as a plain dict."""
    from fttrace import config as config_lib
    if Path(spec).is_dir() or "://" in spec:
        from fttrace.engine.results import read_manifest  # here: it imports pandas and pyarrow
        return read_manifest(spec)["config"]
    return json.loads(config_lib.to_json(config_lib.load(spec, overrides)))


def cmd_config(args, overrides) -> int:
    from fttrace.config import differences
    if args.diff:
        if args.config or overrides:
            raise UserError("config --diff takes two configs and nothing else")
        found = differences(*(resolved_config(spec) for spec in args.diff))
        print("\n".join(found) if found else "no differences")
        return 0
    if not args.config:
        raise UserError("config: name a config file (or --diff A B)")
    print(json.dumps(resolved_config(args.config, overrides), indent=2, sort_keys=True))
    return 0


def cmd_status(args, overrides) -> int:
    from fttrace.tools.status import describe
    if overrides:
        raise UserError("status takes no --config overrides")
    print(describe(args.workdir))
    return 0


def cmd_tensorboard(args, overrides) -> int:
    from fttrace.tools.tensorboard import write_event_files
    if overrides:
        raise UserError("tensorboard takes no --config overrides")
    if args.follow is not None and not args.follow > 0:
        raise UserError(f"--follow {args.follow}: expected a positive number of seconds")
    write_event_files(args.workdir, args.logdir, args.follow)
    return 0


def cmd_wandb(args, overrides) -> int:
    from fttrace.tools.wandb_writer import write_runs
    if overrides:
        raise UserError("wandb takes no --config overrides")
    write_runs(args.workdir, args.project, args.mode, args.dir)
    import wandb
    wandb.teardown()  # W&B's service writes the runs' files out: they are complete when the command returns
    return 0


def cmd_export(args, overrides) -> int:
    import fttrace
    if overrides:
        raise UserError("export takes no --config overrides")
    run = fttrace.open(args.workdir)
    if args.format == "hf":
        from fttrace.tools.hf import export_member
        path = export_member(run, args.member, args.out, args.step)
        print(f"{path}: transformers.AutoModelForCausalLM.from_pretrained({str(path)!r})")
    else:
        print(run.export(args.member, args.out, args.step))
    return 0


def cmd_doctor(args, overrides) -> int:
    from fttrace.tools.doctor import report, requirements
    if overrides:
        raise UserError("doctor takes no --config overrides")
    return report(*requirements())


def leave(code: int, program: bool) -> int:
    """Exit status `code`; as the `fttrace` program, leave at once: I/O threads of an abandoned checkpoint read may
    print during a shutdown."""
    if program:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


COMMANDS = {"run": cmd_run, "merge": cmd_merge, "launch": cmd_launch, "bench": cmd_bench, "config": cmd_config,
            "status": cmd_status, "export": cmd_export, "tensorboard": cmd_tensorboard, "wandb": cmd_wandb,
            "doctor": cmd_doctor}


def main(argv: list[str] | None = None) -> int:
    program = argv is None  # run as the `fttrace` program, not called from Python
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        rest, overrides = split_overrides(argv)
        args = parser.parse_args(rest)
        code = COMMANDS[args.command](args, overrides)
        sys.stdout.flush()  # here, where a reader that left is caught, not at exit
        return code
    except UserError as e:
        print(f"fttrace: error: {e}", file=sys.stderr)
        return leave(2, program)
    except Stopped as e:
        print(f"fttrace: stopped by {e}; the finished phases and the checkpoints are kept: run the same command "
              "again to resume", file=sys.stderr)
        return leave(e.code, program)
    except KeyboardInterrupt:
        print("fttrace: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of stdout left (`fttrace status W | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
