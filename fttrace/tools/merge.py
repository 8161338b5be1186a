"""`fttrace merge`: one results store from the workdirs of a sharded run (`fttrace run --shard i/N`).

The sources must be complete runs of one config and, together, shards 0..N-1 of its grid, each exactly once.
The merged rows are checked against the grid: every member of every phase that keeps parameters (the study kind's
`phase_tables`: pretraining, fine-tuning, reFT and its control; every phase of a language-model study) is present,
and no member of any phase comes from two sources. Anything else is refused with a message naming the shards or members
at fault, and nothing is written. The output holds results.parquet and a manifest naming the sources; paths may
be local or gs:// (etils.epath). The output is locked while it is written (fttrace/engine/lock.py), as a run's
workdir is: a run or another merge writing there meanwhile is refused, naming it.
"""
from __future__ import annotations

import os
import pathlib
import posixpath

import ml_collections
import pandas as pd
from etils import epath

from fttrace.config import named_differences, results_relevant
from fttrace.errors import UserError
from fttrace.engine.lock import WorkdirLock
from fttrace.engine.results import COMPLETE, MANIFEST_FILE, RESULTS_FILE, ResultsStore, manifest, read_manifest, \
    read_parquet, workdir_path, write_json, write_parquet
from fttrace.engine.runner import study_kind

SHOWN = 8  # members named in an error message


def check_shards(sources: list[epath.Path], manifests: list[dict]) -> None:
    """The sources are shards 0..N-1 of one split, each once (or a single whole-grid run)."""
    shards = [m.get("shard") for m in manifests]
    if None in shards:
        if len(sources) > 1:
            whole = sources[shards.index(None)]
            raise UserError(f"{whole} holds the whole grid, not a shard; merge the shards of one sharded run")
        return
    counts = sorted({count for _, count in shards})
    if len(counts) > 1:
        raise UserError(f"the sources are shards of different splits (into {' and '.join(map(str, counts))})")
    count, seen = counts[0], {}
    for source, (index, _) in zip(sources, shards):
        if index in seen:
            raise UserError(f"shard {index}/{count} is given twice: {seen[index]} and {source}")
        seen[index] = source
    missing = [f"{i}/{count}" for i in range(count) if i not in seen]
    if missing:
        raise UserError(f"shard(s) {', '.join(missing)} missing from the merge")


def _listing(pairs) -> str:
    pairs = sorted(pairs)
    shown = ", ".join(f"{phase} {member}" for phase, member in pairs[:SHOWN])
    return shown + (f" and {len(pairs) - SHOWN} more" if len(pairs) > SHOWN else "")


def check_members(config: dict, sources: list[epath.Path], frames: list[pd.DataFrame]) -> None:
    """Every member of every phase that keeps parameters present; no (phase, member) in two sources."""
    owner, twice = {}, set()
    for source, frame in zip(sources, frames):
        for pair in frame[["phase", "member"]].drop_duplicates().itertuples(index=False, name=None):
            if pair in owner:
                twice.add(pair)
            owner.setdefault(pair, source)
    if twice:
        raise UserError(f"members in more than one source: {_listing(twice)}")
    config = ml_collections.ConfigDict(config)
    kind = study_kind(config)(config)
    expected = set()
    for group in kind.groups():
        tables = kind.phase_tables(group)
        expected |= {(phase, m) for phase, table in tables.items() for m in table.member}
    missing = expected - set(owner)
    if missing:
        raise UserError(f"members missing from the merge: {_listing(missing)}")


def _results_of(source: epath.Path) -> pd.DataFrame:
    """A complete source's results; one that claims completion without them (or with a damaged file) is refused."""
    path = source / RESULTS_FILE
    if not path.exists():
        raise UserError(f"{source} claims a complete run but holds no {RESULTS_FILE}; run it again to rewrite it")
    return read_parquet(path, f"run {source} again to rewrite it")


def place(path) -> tuple[str, ...]:
    """Where `path` is, spelling aside: a local path resolved (relative parts, `..`, symbolic links), an object
    store URL with its scheme lower-cased and its path normalised (`gs://b/a/../x//` is `gs://b/x`)."""
    text = str(path)
    scheme, sep, rest = text.partition("://")
    if sep and "/" not in scheme:
        return (scheme.lower() + "://", *[p for p in posixpath.normpath("/" + rest).split("/") if p])
    return tuple(pathlib.Path(os.path.realpath(text)).parts)


def overlap(a, b) -> bool:
    """Whether `a` and `b` are one place, or one lies inside the other (writing or clearing one touches the other)."""
    pa, pb = place(a), place(b)
    n = min(len(pa), len(pb))
    return pa[:n] == pb[:n]


def merge_workdirs(sources, out, overwrite: bool = False) -> epath.Path:
    """Merge the results of sharded runs into `out`; returns the path of the merged results.parquet."""
    sources, out = [workdir_path(s) for s in sources], workdir_path(out)
    if not sources:
        raise UserError("nothing to merge: name the workdirs of the shards")
    for source in sources:
        if overlap(out, source):
            raise UserError(f"--out {out} is, holds or lies inside the source {source}; choose another directory")
    manifests = [read_manifest(s) for s in sources]
    for source, found in zip(sources, manifests):
        if found["status"] != COMPLETE:
            raise UserError(f"{source} holds an unfinished run (status {found['status']!r}); finish it first "
                            "(running it again resumes it)")
        if results_relevant(found["config"]) != results_relevant(manifests[0]["config"]):
            raise UserError(f"{source} holds a run of a different config than {sources[0]} "
                            f"({named_differences(manifests[0]['config'], found['config'])})")
    check_shards(sources, manifests)
    frames = [_results_of(s) for s in sources]
    check_members(manifests[0]["config"], sources, frames)
    store = ResultsStore(out)
    store.prepare()
    with WorkdirLock(out, "merge"):  # no run or other merge writes into --out meanwhile
        if (out / MANIFEST_FILE).exists() and not overwrite:
            raise UserError(f"{out} already holds results; choose another --out or pass --overwrite")
        write_parquet(store.results_path, pd.concat(frames, ignore_index=True))
        merged_from = [dict(workdir=str(s), shard=m.get("shard"), host=m.get("host"), devices=m.get("devices"))
                       for s, m in zip(sources, manifests)]
        write_json(out / MANIFEST_FILE, manifest(manifests[0]["config"], [d for m in manifests for d in m["devices"]],
                                                 status=COMPLETE, shard=None, merged_from=merged_from))
    return store.results_path
