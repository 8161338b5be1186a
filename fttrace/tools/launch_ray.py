"""`fttrace launch ray`: a study's shards as Ray tasks, retried where they fail, merged when every one is done.

Shard i of N is one Ray task that runs `fttrace run CONFIG --workdir WORKDIR/shard-i --shard i/N -q` (shards.py) in a
worker process of its own (`max_calls=1`: a fresh process per attempt, so JAX sees the accelerators Ray gave it),
with the resources the shard asks for. An attempt whose process dies (killed, out of memory, its node lost) or whose
run fails is retried, up to `retries` times: the retry runs the same command, which resumes the shard from its
checkpoints. A run refused as bad input (status 2: the config, the workdir) is not retried. Meanwhile one view of
every shard is printed as it changes: its attempt, node, phase, step and ETA (each shard's progress.json, as
`fttrace status` reads it). When every shard is done, `fttrace merge` writes WORKDIR/merged; when one failed for good,
nothing is merged and the same command, run again, resumes the unfinished shards.

WORKDIR must be a place every node of the cluster reaches (a shared filesystem, or a bucket: gs://, s3://).
Without an address a local Ray instance is started (`ray.init()`); with one, the cluster at that address is joined.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
import time

from fttrace.errors import UserError
from fttrace.tools import shards as shard_lib

RETRIES = 3  # attempts after the first, per shard
VIEW_EVERY_S = 10.0  # how often the view of the shards is refreshed (printed only where it changed)
REFUSED = 2  # `fttrace run`'s exit status for bad input


class ShardError(Exception):
    """An attempt at a shard whose run exited with status `code`; `tail` is the last line it wrote to stderr."""

    def __init__(self, index: int, code: int, tail: str):
        super().__init__(index, code, tail)
        self.index, self.code, self.tail = index, code, tail

    def __str__(self) -> str:
        return f"fttrace run exited with status {self.code}" + (f": {self.tail}" if self.tail else "")


class ShardFailed(ShardError):
    """An attempt at a shard that ended without finishing it: retried."""


class ShardRefused(ShardError):
    """A shard whose run was refused as bad input: another attempt would be refused too, so it is not retried."""


class _Tail(io.TextIOBase):
    """A stream that passes what it is given on to `stream` and keeps its last line."""

    def __init__(self, stream):
        self.stream, self.last = stream, ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        lines = [line for line in text.splitlines() if line.strip()]
        if lines:
            self.last = lines[-1].strip()
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def parse_resources(text: str | None) -> dict:
    """`--resources '{"GPU": 1}'` as Ray task options: CPU and GPU become num_cpus and num_gpus, any other name a
    custom resource. Default: one CPU."""
    if text is None:
        return dict(num_cpus=1)
    try:
        found = json.loads(text)
    except ValueError as e:
        raise UserError(f"--resources {text}: not JSON ({e}); expected e.g. '{{\"GPU\": 1}}'") from None
    if not isinstance(found, dict) or not all(isinstance(k, str) and isinstance(v, (int, float)) and
                                              not isinstance(v, bool) and v >= 0 for k, v in found.items()):
        raise UserError(f"--resources {text}: expected a JSON object of resource names and non-negative amounts, "
                        "e.g. '{\"GPU\": 1}'")
    found = dict(found)
    options = dict(num_cpus=found.pop("CPU", 1), num_gpus=found.pop("GPU", 0))
    if found:
        options["resources"] = found
    return options


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("fttrace launch ray needs Ray: pip install 'fttrace[ray]'") from None
    return ray


def run_shard(board, command, index: int, arguments: list[str]) -> dict:
    """One attempt at a shard, inside a Ray worker: reports itself to the board, then runs `command` (the `fttrace`
    command line as a function, `cli.main`) with `arguments` in this process."""
    node = platform.node()
    # Not waited for: a task blocked in ray.get lends its CPUs to the next task, which would then run alongside.
    board.started.remote(index, node, os.getpid())
    tail = _Tail(sys.stderr)
    with contextlib.redirect_stderr(tail):
        code = command(arguments)
    if code == REFUSED:
        raise ShardRefused(index, code, tail.last)
    if code != 0:
        raise ShardFailed(index, code, tail.last)
    return dict(index=index, node=node)


class Board:
    """The attempts at each shard (a Ray actor the tasks report to): [{node, pid, started}] per shard index."""

    def __init__(self):
        self.attempts: dict[int, list[dict]] = {}

    def started(self, index: int, node: str, pid: int) -> None:
        self.attempts.setdefault(index, []).append(dict(node=node, pid=pid, started=time.time()))

    def view(self) -> dict:
        return self.attempts


def _progress(workdir: str) -> str:
    """Where a shard's run is, from its progress.json (empty before its first record)."""
    from fttrace.engine.results import PROGRESS_FILE, workdir_path
    from fttrace.tools.status import progress_line
    try:
        return progress_line(json.loads((workdir_path(workdir) / PROGRESS_FILE).read_text()), age=False)
    except (OSError, ValueError, KeyError, TypeError):
        return ""


def shard_line(index: int, count: int, attempts: list[dict], state: str, progress: str) -> str:
    """One shard in the view: `shard 1/3  attempt 2 on host-a  group 0 pretrain  step 10/20, ...`."""
    where = f"attempt {len(attempts)} on {attempts[-1]['node']}" if attempts else "waiting for a worker"
    detail = state if state else progress
    return f"shard {index}/{count}  {where}" + (f"  {detail}" if detail else "")


def launch_ray(command, config: str, workdir: str, count: int, overrides=(), address: str | None = None,
               resources: dict | None = None, retries: int = RETRIES, every: float = VIEW_EVERY_S,
               init: dict | None = None, say=None) -> str:
    """Run every shard of the study as a Ray task and merge them; returns the path of the merged results.parquet.

    `command`: the `fttrace` command line as a function of its arguments (`cli.main`: passed in, since the tools sit
    below the command line). `init`: keyword arguments of `ray.init` (num_cpus, ...) when this starts or joins the
    cluster itself (Ray already initialised in this process is used as it is). `say`: where the view's lines go
    (default stdout)."""
    say = say or (lambda line: print(line, flush=True))
    shard_lib.check_count(count)
    if retries < 0:
        raise UserError(f"--retries {retries}: expected 0 or more")
    config, workdir = shard_lib.local_config(config), shard_lib.local_workdir(workdir)
    ray = _import_ray()
    if not ray.is_initialized():
        ray.init(address=address, **(init or {}))
    task = ray.remote(max_calls=1)(run_shard).options(**(resources or parse_resources(None)), max_retries=retries,
                                                      retry_exceptions=[ShardFailed])
    board = ray.remote(num_cpus=0)(Board).remote()
    pending = {task.remote(board, command, i, shard_lib.run_arguments(config, workdir, i, count, overrides)): i
               for i in range(count)}
    states, failures, shown, tried = {i: "" for i in range(count)}, {}, {}, {}
    say(f"fttrace launch ray: {count} shard(s) of {config} into {workdir}, each retried up to {retries} time(s)")
    while True:
        attempts = ray.get(board.view.remote())
        for i in range(count):
            made = attempts.get(i, [])
            if len(made) > tried.get(i, 1) and len(made) > 1:
                say(f"shard {i}/{count}: attempt {len(made) - 1} on {made[-2]['node']} ended without finishing; "
                    f"attempt {len(made)} on {made[-1]['node']} resumes it from its checkpoints")
            tried[i] = max(len(made), 1)
            line = shard_line(i, count, made, states[i], _progress(shard_lib.shard_workdir(workdir, i)))
            if shown.get(i) != line:
                say(line)
                shown[i] = line
        if not pending:
            break
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=every)
        for ref in ready:
            i = pending.pop(ref)
            try:
                ray.get(ref)
                states[i] = "done"
            except Exception as e:  # noqa: BLE001 -- a task's failure, after its retries, as Ray reports it
                failures[i] = _reason(e)
                states[i] = f"failed: {failures[i]}"
    if failures:
        named = "; ".join(f"shard {i}/{count}: {why}" for i, why in sorted(failures.items()))
        raise UserError(f"not merging, {len(failures)} shard(s) failed ({named}); run the same command again: "
                        "finished shards return at once, the others resume from their checkpoints")
    from fttrace.tools.merge import merge_workdirs
    merged = merge_workdirs([shard_lib.shard_workdir(workdir, i) for i in range(count)],
                            shard_lib.merged_workdir(workdir), overwrite=True)
    say(f"fttrace launch ray: every shard done; merged into {shard_lib.merged_workdir(workdir)}")
    return str(merged)


def _reason(error: Exception) -> str:
    """A failed task's reason in one line: the run's own error, or what Ray says of a process that died."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, ShardError):
        return str(cause)
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__
