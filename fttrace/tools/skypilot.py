"""`fttrace launch skypilot`: a study's shards as SkyPilot managed jobs on cloud VMs (spot included), then a merge job.

For shard i of N it writes OUT_DIR/shard-i.yaml, a SkyPilot task: the current directory (the repository, where the
command runs) as its workdir, synced to the VM,
fttrace installed by `setup`, `fttrace run ... --shard i/N -q` (shards.py) as its run command, the VM's accelerators,
and `job_recovery`: SkyPilot's managed jobs relaunch a preempted spot VM (elsewhere if need be) and restart the job up
to `restarts` times after a failure of its own; each relaunch runs the same command, which resumes the shard from
its checkpoints in WORKDIR. OUT_DIR/merge.yaml is a small CPU job that waits until every shard is complete and runs
`fttrace merge` into WORKDIR/merged. Each file is submitted with `sky jobs launch -y -d FILE`; with `dry_run` the
files are written and the commands printed, nothing submitted.

WORKDIR is a bucket every VM reaches: gs://... is used as it is (orbax and etils write there directly); any other
store (s3://, r2://...) is mounted on each VM at MOUNT_POINT (SkyPilot's MOUNT_CACHED mode) and the shards write there.
"""
from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import yaml

from fttrace.errors import UserError
from fttrace.tools import shards as shard_lib

MOUNT_POINT = "/fttrace-workdir"
DIRECT = ("gs://",)  # buckets fttrace writes to itself; other schemes are mounted
RECOVERY = "EAGER_NEXT_REGION"  # SkyPilot's default: relaunch in the next region with capacity
MERGE_WAIT_S, MERGE_TRIES = 300, 288  # the merge job checks every 5 minutes, for a day at most
SETUP = 'pip install -e ".[gcs]"'  # on the VM, in the synced repository (SkyPilot's ~/sky_workdir)
GPU_SETUP = ' "jax[cuda12]"'
# Exit status 0 when every workdir named holds a complete run (the merge job's wait).
READY = ("import sys; from fttrace.engine.results import finished, read_manifest; "
         "sys.exit(not all(finished(read_manifest(w)) for w in sys.argv[1:]))")


def _workdir(workdir: str) -> tuple[str, dict]:
    """(the workdir as the shards see it, the task's file_mounts)."""
    scheme, sep, _ = workdir.partition("://")
    if not sep:
        raise UserError(f"--workdir {workdir}: SkyPilot's shards run on VMs of their own; give a bucket every VM "
                        "reaches (gs://bucket/study, s3://bucket/study)")
    if workdir.startswith(DIRECT):
        return workdir, {}
    return MOUNT_POINT, {MOUNT_POINT: dict(source=workdir.rstrip("/"), mode="MOUNT_CACHED")}


def _check_gpus(gpus: str | None) -> None:
    if gpus is None:
        return
    name, sep, count = gpus.partition(":")
    if not name or (sep and not count.isdigit()):
        raise UserError(f"--gpus {gpus}: expected an accelerator and a count, e.g. H100:1")


def shard_task(config: str, workdir: str, index: int, count: int, overrides=(), gpus: str | None = None,
               spot: bool = False, restarts: int = 3) -> dict:
    """The SkyPilot task of shard `index` of `count`."""
    where, mounts = _workdir(workdir)
    resources = dict(use_spot=spot, job_recovery=dict(strategy=RECOVERY, max_restarts_on_errors=restarts))
    if gpus:
        resources["accelerators"] = gpus
    task = dict(name=f"fttrace-shard-{index}-of-{count}", workdir=str(Path.cwd()), resources=resources,
                setup=SETUP + (GPU_SETUP if gpus else ""),
                run=shlex.join(["fttrace", *shard_lib.run_arguments(config, where, index, count, overrides)]))
    if mounts:
        task["file_mounts"] = mounts
    return task


def merge_task(workdir: str, count: int) -> dict:
    """The task that waits for every shard to be complete, then merges them into WORKDIR/merged."""
    where, mounts = _workdir(workdir)
    merge = shlex.join(["fttrace", *shard_lib.merge_arguments(where, count), "--overwrite"])
    ready = shlex.join(["python", "-c", READY, *(shard_lib.shard_workdir(where, i) for i in range(count))]) + \
        " 2>/dev/null"
    run = (f"for try in $(seq {MERGE_TRIES}); do\n  if {ready}; then {merge}; exit $?; fi\n"
           f"  sleep {MERGE_WAIT_S}\ndone\necho 'fttrace: not every shard completed; not merging' >&2\nexit 1\n")
    task = dict(name=f"fttrace-merge-{count}", workdir=str(Path.cwd()), resources=dict(cpus="2+"), setup=SETUP, run=run)
    if mounts:
        task["file_mounts"] = mounts
    return task


def write_tasks(config: str, workdir: str, count: int, overrides=(), out_dir="skypilot", gpus: str | None = None,
                spot: bool = False, restarts: int = 3) -> list[Path]:
    """Write the N shard tasks and the merge task into `out_dir`; returns their paths, the merge task's last."""
    shard_lib.check_count(count)
    _check_gpus(gpus)
    if restarts < 0:
        raise UserError(f"--restarts {restarts}: expected 0 or more")
    tasks = {f"shard-{i}.yaml": shard_task(config, workdir, i, count, overrides, gpus, spot, restarts)
             for i in range(count)}
    tasks["merge.yaml"] = merge_task(workdir, count)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, task in tasks.items():
            (out / name).write_text(yaml.dump(task, Dumper=_Dumper, sort_keys=False))
    except OSError as e:
        raise UserError(f"cannot write the task files into {out}: {e.strerror or e}") from None
    return [out / name for name in tasks]


class _Dumper(yaml.SafeDumper):
    """Writes multi-line strings (the merge job's script) as YAML block literals, as a person would."""


_Dumper.add_representer(str, lambda dumper, text: dumper.represent_scalar(
    "tag:yaml.org,2002:str", text, style="|" if "\n" in text else None))


def submit_commands(paths) -> list[list[str]]:
    return [["sky", "jobs", "launch", "-y", "-d", str(path)] for path in paths]


def launch_skypilot(config: str, workdir: str, count: int, overrides=(), out_dir="skypilot", gpus: str | None = None,
                    spot: bool = False, restarts: int = 3, dry_run: bool = False, say=print) -> list[list[str]]:
    """Write the tasks and submit them (or, with `dry_run`, print the commands); returns the commands."""
    commands = submit_commands(write_tasks(config, workdir, count, overrides, out_dir, gpus, spot, restarts))
    for command in commands:
        say(shlex.join(command))
        if dry_run:
            continue
        try:
            subprocess.run(command, check=True)
        except FileNotFoundError:
            raise UserError("`sky` is not installed: pip install 'fttrace[skypilot]' (or pass --dry-run)") from None
        except subprocess.CalledProcessError as e:
            raise UserError(f"`{shlex.join(command)}` failed (status {e.returncode}); the jobs submitted before it "
                            "run on: `sky jobs queue` lists them") from None
    return commands
