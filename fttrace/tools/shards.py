"""The shards of a launched study: where each one writes and the `fttrace` commands that run and merge them.

Every route across machines (`fttrace launch ray`, `fttrace launch skypilot`, launch/slurm_array.sh) lays a study
out the same way: shard i of N runs `fttrace run CONFIG --workdir WORKDIR/shard-i --shard i/N -q`, and once every
shard is done `fttrace merge WORKDIR/shard-0 ... --out WORKDIR/merged` joins them. A rerun of a shard's command
resumes it from its checkpoints, so a launcher retries a shard by running its command again.
"""
from __future__ import annotations

import os

from fttrace.errors import UserError

MERGED = "merged"


def check_count(count: int) -> int:
    if not isinstance(count, int) or count < 1:
        raise UserError(f"--shards {count}: expected a positive number of shards")
    return count


def join(workdir: str, name: str) -> str:
    """`workdir`/`name`, keeping a URL's scheme (`gs://b/study` + `shard-0` is `gs://b/study/shard-0`)."""
    return f"{str(workdir).rstrip('/')}/{name}"


def shard_workdir(workdir: str, index: int) -> str:
    return join(workdir, f"shard-{index}")


def merged_workdir(workdir: str) -> str:
    return join(workdir, MERGED)


def config_flags(overrides) -> list[str]:
    """`KEY=VALUE` overrides (as `cli.split_overrides` gives them) as `--config.KEY=VALUE` arguments."""
    return [f"--config.{item}" for item in overrides]


def run_arguments(config: str, workdir: str, index: int, count: int, overrides=()) -> list[str]:
    """The arguments of `fttrace` that run shard `index` of `count`."""
    return ["run", config, "--workdir", shard_workdir(workdir, index), "--shard", f"{index}/{count}", "-q",
            *config_flags(overrides)]


def merge_arguments(workdir: str, count: int) -> list[str]:
    """The arguments of `fttrace` that merge the `count` shards into WORKDIR/merged."""
    return ["merge", *(shard_workdir(workdir, i) for i in range(count)), "--out", merged_workdir(workdir)]


def local_config(config: str) -> str:
    """A config given as a path to a file here (path.py or path.py:arg) made absolute, so that processes started
    elsewhere on this machine find it; a bundled config's name is kept as it is."""
    path, sep, arg = config.partition(":")
    return os.path.abspath(path) + sep + arg if os.path.isfile(path) else config


def local_workdir(workdir: str) -> str:
    """A local workdir made absolute (a URL such as gs://... is kept)."""
    return str(workdir) if "://" in str(workdir) else os.path.abspath(workdir)
