"""Reading results stores: one fttrace workdir, or the shard workdirs of one sweep, as one study.

A store is a directory holding `results.parquet` (long format: one row per member, phase, step and metric, with
the member's hyperparameters as columns) and `manifest.json` (config, versions, devices, git commit, wall time,
status). Several stores given together are one sweep split across machines: they must hold the same config, and
no (member, phase, step, metric) row may come from two of them.

`Study.members` has one row per member: its kind in the run tree (the phase that trained it), its parent, its
pretrained ancestor, its status and hyperparameters. `Study.lineage` has one row per fine-tuned member with the ids
of its pretrained parent and reverse-fine-tuned child. Paths are local.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from analysis.errors import AnalysisError
from analysis.schema import BASE_COLUMNS, KEY, MANIFEST_FILE, RESULTS_FILE, RESULTS_NEUTRAL, flat

REQUIRED_HYPERPARAMETERS = ("group", "seed", "pretrain_lr", "prior", "prior_name")
# Present once a store holds fine-tuning (or reFT / control) rows; added empty before that.
LATER_HYPERPARAMETERS = {"finetune_lr": np.nan, "finetune_lr_name": "", "spurious": np.nan, "reft_lr": np.nan,
                         "reft_lr_base": np.nan, "control_lr_factor": np.nan}
# The phase that trains a member names its place in the run tree.
KIND_OF_PHASE = {"pretrain": "pretrained", "finetune": "finetuned", "reft": "reft",
                 "control_pretrain": "control_pretrained", "control_reft": "control_reft",
                 # members of known answer (fttrace/answer/planted.py): the matched nulls fine-tuned like the
                 # lowest-prior members and their reFT, the planted wrappers and theirs
                 "null_finetune": "null_finetuned", "null_reft": "null_reft",
                 "planted_wrapper": "planted_wrapper", "wrapper_reft": "wrapper_reft"}
SHOWN = 5  # examples named in an error message


@dataclasses.dataclass(frozen=True)
class Store:
    path: Path
    manifest: dict
    results: pd.DataFrame

    @property
    def status(self) -> str:
        return str(self.manifest.get("status", "unknown"))

    @property
    def shard(self) -> tuple[int, int] | None:
        shard = self.manifest.get("shard")
        return (int(shard[0]), int(shard[1])) if shard else None


@dataclasses.dataclass
class Study:
    """Every row of one sweep, with its members joined to their lineage and hyperparameters."""
    stores: list[Store]
    results: pd.DataFrame  # long format, all stores
    members: pd.DataFrame  # one row per member
    notes: list[str]  # what a reader must know about the stores (runs in progress, missing shards)

    @property
    def config(self) -> dict:
        return self.stores[0].manifest["config"]

    @property
    def paths(self) -> list[Path]:
        return [store.path for store in self.stores]

    def planted_lineage(self, kind: str) -> pd.DataFrame:
        """`lineage` for the members of known answer of `kind` ("null_finetuned" or "planted_wrapper"): one row per
        such member (in `finetuned`) with its reFT child (in `reft`) and the settings and `pretrained` parent of the
        real member it copies (`twin`: its id without the leading n / w), whose C_PT a revival must reach."""
        members = self.members
        mine = members[members.kind == kind][["member"]].rename(columns={"member": "finetuned"})
        mine["twin"] = mine.finetuned.str.slice(1)
        twins = self.lineage.drop(columns="reft").rename(columns={"finetuned": "twin"})
        children = members[members.parent.isin(mine.finetuned)][["member", "parent"]].rename(
            columns={"member": "reft", "parent": "finetuned"})
        table = mine.merge(twins, on="twin", how="inner").merge(children, on="finetuned", how="left")
        first = ["finetuned", "pretrained", "reft", "twin"]
        return table[first + [c for c in table.columns if c not in first]].reset_index(drop=True)

    @property
    def lineage(self) -> pd.DataFrame:
        """One row per fine-tuned member: `finetuned`, `pretrained` and `reft` ids (NaN without reFT), settings."""
        members = self.members
        finetuned = members[members.kind == "finetuned"].rename(columns={"member": "finetuned"})
        reft = members[members.kind == "reft"][["member", "parent"]].rename(
            columns={"member": "reft", "parent": "finetuned"})
        table = finetuned.drop(columns=["kind", "parent"]).merge(reft, on="finetuned", how="left")
        first = ["finetuned", "pretrained", "reft"]
        return table[first + [c for c in table.columns if c not in first]].reset_index(drop=True)


def read_manifest(path: Path) -> dict:
    """path/manifest.json; AnalysisError naming it if missing, unreadable or not an fttrace manifest."""
    file = path / MANIFEST_FILE
    if not file.exists():
        raise AnalysisError(f"{path}: no {MANIFEST_FILE}; not an fttrace workdir")
    try:
        found = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise AnalysisError(f"{file}: unreadable ({e})") from None
    if not isinstance(found, dict) or not isinstance(found.get("config"), dict):
        raise AnalysisError(f"{file}: not an fttrace manifest (no config)")
    return found


def read_results_file(path: Path) -> pd.DataFrame:
    """Every row of path/results.parquet (any study); AnalysisError naming it if missing or unreadable."""
    file = path / RESULTS_FILE
    if not file.exists():
        raise AnalysisError(f"{path}: no {RESULTS_FILE} (not an fttrace workdir, or its run has not finished a "
                            "phase yet)")
    try:
        return pq.read_table(file).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as e:
        raise AnalysisError(f"{file}: not a readable Parquet file ({str(e).splitlines()[0]})") from None


def _read_results(path: Path) -> pd.DataFrame:
    """The rows of a wrapper-study store, checked for the columns the analysis needs."""
    frame = read_results_file(path)
    file = path / RESULTS_FILE
    missing = [c for c in (*BASE_COLUMNS, *REQUIRED_HYPERPARAMETERS) if c not in frame]
    if missing:
        raise AnalysisError(f"{file}: not an fttrace results store (missing columns: {', '.join(missing)})")
    return frame


def _duplicates(frame: pd.DataFrame) -> str:
    """'' when every (member, phase, step, metric) occurs once, else a few of the repeated keys."""
    repeated = frame[frame.duplicated(KEY, keep="first")]
    if repeated.empty:
        return ""
    shown = "; ".join(f"{r.member} {r.phase} step {r.step} {r.metric}" for r in repeated.head(SHOWN).itertuples())
    more = len(repeated) - SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def read_store(path) -> Store:
    """One workdir (or its results.parquet); raises AnalysisError naming the path if it is no fttrace store."""
    path = Path(path)
    if path.name == RESULTS_FILE and path.is_file():
        path = path.parent
    if not path.exists():
        raise AnalysisError(f"{path}: no such directory")
    if not path.is_dir():
        raise AnalysisError(f"{path}: not a directory (name an fttrace workdir)")
    results = _read_results(path)
    manifest = read_manifest(path)
    if repeated := _duplicates(results):
        raise AnalysisError(f"{path / RESULTS_FILE}: repeated rows ({repeated})")
    return Store(path, manifest, results)


GROWN = {"sweep.seeds", "sweep.seed_offset"}  # the keys on which the stores of one sweep grown by seeds differ


def _seed_range(store: Store) -> range:
    sweep = store.manifest["config"]["sweep"]
    return range(sweep.get("seed_offset", 0), sweep.get("seed_offset", 0) + sweep["seeds"])


def config_differences(manifest: dict, other: dict) -> list[str]:
    """The config keys (dotted) on which two stores' manifests differ, but those of how a run went (RESULTS_NEUTRAL);
    an empty section is as if absent."""
    first, second = ({k: v for k, v in flat(m["config"]).items() if v != {}} for m in (manifest, other))
    return sorted(k for k in first.keys() | second.keys()
                  if first.get(k) != second.get(k) and k not in RESULTS_NEUTRAL)


def listed(keys: list[str]) -> str:
    """The first SHOWN keys, and how many more."""
    return ", ".join(keys[:SHOWN]) + (f" and {len(keys) - SHOWN} more" if len(keys) > SHOWN else "")


def _check_same_config(stores: list[Store]) -> None:
    """The stores are one sweep: shards of it, or runs of its config on other seeds (`sweep.seed_offset`: a sweep
    grown by seeds), whose seed ranges must not overlap."""
    for store in stores[1:]:
        differ = config_differences(stores[0].manifest, store.manifest)
        if differ and set(differ) <= GROWN:
            continue
        if differ:
            raise AnalysisError(f"{store.path} and {stores[0].path} hold different configs ({listed(differ)}); "
                                "stores analysed together must be shards of one sweep or its config on other seeds")
    ranges = sorted({(r.start, r.stop): store for store in stores for r in [_seed_range(store)]}.items())
    for ((_, stop), before), ((start, _), after) in zip(ranges, ranges[1:]):
        if start < stop:
            raise AnalysisError(f"{before.path} and {after.path} both hold seeds from {start} on: a sweep grown by "
                                "seeds needs disjoint seed ranges (sweep.seed_offset)")


def _shard_notes(stores: list[Store]) -> list[str]:
    shards = [store.shard for store in stores]
    if all(shard is None for shard in shards):
        return []
    if any(shard is None for shard in shards):
        return ["some stores hold the whole grid and others a shard of it"]
    counts = {count for _, count in shards}
    if len(counts) > 1:
        raise AnalysisError(f"the stores are shards of different splits (into {' and '.join(map(str, counts))}): "
                            f"{', '.join(str(s.path) for s in stores)}")
    count = counts.pop()
    missing = sorted(set(range(count)) - {index for index, _ in shards})
    if missing:
        return [f"shard(s) {', '.join(f'{i}/{count}' for i in missing)} of the sweep are not among the stores: "
                "these results cover part of the grid"]
    return []


def _combine(stores: list[Store]) -> pd.DataFrame:
    frames = [store.results.assign(store=i) for i, store in enumerate(stores)]
    frame = pd.concat(frames, ignore_index=True)
    if len(stores) > 1 and (repeated := _duplicates(frame)):
        clash = frame[frame.duplicated(KEY, keep=False)].store.unique()
        names = " and ".join(str(stores[i].path) for i in sorted(clash)[:2])
        raise AnalysisError(f"{names} hold the same rows ({repeated}): the same store given twice, or a merged "
                            "store together with its shards?")
    for column, empty in LATER_HYPERPARAMETERS.items():
        if column not in frame:
            frame[column] = empty
    # A control trained on C_PT is matched to the reFT LR it was run for; stores written before the column existed
    # ran it at that LR x its factor.
    missing = frame.reft_lr_base.isna() & frame.control_lr_factor.notna()
    frame.loc[missing, "reft_lr_base"] = frame.reft_lr[missing] / frame.control_lr_factor[missing]
    frame["finetune_lr_name"] = frame["finetune_lr_name"].fillna("").astype(str)
    frame["prior_name"] = frame["prior_name"].fillna("").astype(str)
    return frame


def label(name: pd.Series, value: pd.Series) -> pd.Series:
    """A setting's name where it has one ("medium"), else its value ("0.0003"); "" where it has neither."""
    numbers = value.map(lambda v: "" if pd.isna(v) else f"{v:g}")
    return name.where(name != "", numbers)


def _members(frame: pd.DataFrame) -> pd.DataFrame:
    hyper = [c for c in frame.columns if c not in (*BASE_COLUMNS, "store")]
    by_member = frame.groupby("member", sort=False)
    members = by_member[["parent", "store", *hyper]].first()
    training = frame[frame.phase.isin(list(KIND_OF_PHASE))]
    members["kind"] = training.groupby("member").phase.first().map(KIND_OF_PHASE).reindex(members.index)
    members["status"] = np.where(by_member.status.agg(lambda s: (s == "diverged").any()), "diverged", "ok")
    members = members.reset_index()
    parents = dict(zip(members.member, members.parent))
    root = members.member.copy()
    for _ in range(len(KIND_OF_PHASE)):  # the run tree is at most this deep
        up = root.map(parents)
        root = root.where(up.isna(), up)
    members["pretrained"] = root
    members["finetune_lr_label"] = label(members.finetune_lr_name, members.finetune_lr)
    members["prior_label"] = label(members.prior_name, members.prior)
    first = ["member", "kind", "parent", "pretrained", "status"]
    return members[first + [c for c in members.columns if c not in first]]


def load_study(paths) -> Study:
    """One or more stores as one study; raises AnalysisError for missing, foreign or incompatible stores."""
    paths = [Path(p) for p in ([paths] if isinstance(paths, (str, Path)) else paths)]
    if not paths:
        raise AnalysisError("no results store given")
    resolved = [p.resolve() for p in paths]
    for i, p in enumerate(resolved):
        if p in resolved[:i]:
            raise AnalysisError(f"{paths[i]}: given twice")
    stores = [read_store(p) for p in paths]
    _check_same_config(stores)
    notes = _shard_notes(stores)
    notes += [f"{store.path}: run status {store.status!r}, not 'complete': these are its results so far"
              for store in stores if store.status != "complete"]
    results = _combine(stores)
    return Study(stores, results, _members(results), notes)
