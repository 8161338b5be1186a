"""`fttrace status WORKDIR`: where a run stands, read from its workdir alone (any study kind, running or finished).

    runs/pcfg_index: index study, running since 2026-12-05 04:46 UTC, 1 device(s) in 1 process(es)
      done: g0-pretrain
      now: group 0 finetune  step 250/8000, 280 of 450 members training, 207 member-steps/s, ETA 4h 40m at the
           budget (0m 12s ago); live curves of g0-finetune
      diverged: none of 30 members with results

The phase running comes from WORKDIR/progress.json (fttrace/engine/progress.py: member-steps/s and the ETA count the
members still training only; an evaluation, its sets of members done), the finished phases from the results parts,
divergences from the results' status column. Whether an unfinished run is still running comes from the workdir's lock
record (fttrace/engine/lock.py): a run whose process is gone (killed, its lock record left on this host)
is "stopped (process gone)", one that ended without finishing (an error, a signal) "stopped"; the status reads the
record and takes no lock.
"""
from __future__ import annotations

import datetime
import json
import time

from etils import epath

from fttrace.engine.lock import describe as describe_holder, gone, holder_of
from fttrace.engine.progress import duration as _duration
from fttrace.engine.results import LIVE_DIR, MANIFEST_FILE, PARTS_DIR, PROGRESS_FILE, RESULTS_FILE, RESULTS_REMEDY, \
    finished, read_manifest, read_parquet, wall_time, workdir_path


def _part_names(folder: epath.Path) -> list[str]:
    """Part names in a parts or live folder (one per part, however many processes wrote it)."""
    return sorted({p.name.split(".")[0] for p in folder.glob("*.parquet")}) if folder.exists() else []


def progress_line(record: dict, age: bool = True) -> str:
    """A progress record (progress.json) in one line: the stage, its step, members, rate and ETA, and (`age`) how
    long ago it was written."""
    ago = f" ({_duration(time.time() - record['updated'])} ago)" if age else ""
    if record.get("kind") != "phase":
        if record.get("units"):  # an evaluation that has announced its sets of members
            return (f"{record['stage'].strip()}: sets {record['units_done']}/{record['units']}, members "
                    f"{record['members_done']}/{record['members']}, ETA {_duration(record.get('eta_s'))}{ago}")
        return f"{record['stage'].strip()}: started{ago}"
    training = record.get("training")
    members = (f"{training} of {record['members']} members training" if training is not None
               else f"{record['members']} members")
    stopped = record.get("stopped_at")
    left = (f"every member stopped by step {stopped}" if stopped is not None else
            f"ETA {_duration(record['eta_s'])} at the budget")
    return (f"{record['stage'].strip()}  step {record['step']}/{record['steps']}, {members}, "
            f"{record['member_steps_per_s']:.0f} member-steps/s, {left}{ago}")


def time_shares(times: dict, wall: float) -> str:
    """Where a finished run's wall time went (the manifest's `time`, written by `progress.Progress`): training
    phases (their host-side measurements apart), evaluations, and the rest (data, compiling outside phases,
    writing results). A phase trained inside an evaluation (`within`: reFT's control) counts as a training phase,
    not as the evaluation's too, so the shares add up to the wall time."""
    phases = sum(t["wall_s"] for t in times.values() if t["kind"] == "phase")
    measuring = sum(t.get("measuring_s", 0.0) for t in times.values() if t["kind"] == "phase")
    nested = sum(t["wall_s"] for t in times.values() if t["kind"] == "phase" and t.get("within"))
    evaluations = sum(t["wall_s"] for t in times.values() if t["kind"] == "evaluation") - nested
    share = lambda s: f"{_duration(s)} ({s / wall:.0%})"  # noqa: E731
    return (f"training phases {share(phases - measuring)}, measurements inside them (sampling, decoding, probes) "
            f"{share(measuring)}, evaluations {share(evaluations)}, "
            f"the rest {share(max(wall - phases - evaluations, 0))}")


def _time(iso: str | None) -> str:
    return datetime.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M UTC") if iso else "?"


def _state(workdir, found: dict) -> tuple[str, bool]:
    """An unfinished run's state, and whether it runs: its lock's holder is alive (or on another host, where it
    cannot be checked), gone, or there is none (the run ended without finishing)."""
    holder = holder_of(workdir)
    if holder is None:
        return f"stopped (started {_time(found.get('written'))})", False
    who = f"process {holder['pid']} on {holder['host']}"
    if gone(holder):
        return f"stopped (process gone): {who}, started {holder.get('since')}", False
    return f"running since {holder.get('since')}, {who}", True


def describe(workdir) -> str:
    workdir = workdir_path(workdir)
    holder = holder_of(workdir)
    if holder and not gone(holder) and not (workdir / MANIFEST_FILE).exists():  # before its manifest is written
        return f"{workdir}: starting, {describe_holder(holder)}"
    found = read_manifest(workdir)
    config = found["config"]
    study = config.get("study") or config.get("task", {}).get("name", "?")
    ended, wall = finished(found), wall_time(found)
    when, running = (f"finished {_time(found.get('ended') or found.get('written'))}", False) if ended else \
        _state(workdir, found)
    lines = [f"{workdir}: {study} study, {when}, {len(found['devices'])} device(s) in {found.get('processes', 1)} "
             "process(es)" + (f", wall {_duration(wall)}" if ended and wall else "")]
    if ended and wall and found.get("time"):
        lines.append(f"  time: {time_shares(found['time'], wall)}")
    done = [name for name in _part_names(workdir / PARTS_DIR) if not name.endswith("-summary")]
    lines.append(f"  done: {', '.join(done) if done else 'nothing yet'}")
    progress = workdir / PROGRESS_FILE
    if not ended and progress.exists():
        try:
            now = progress_line(json.loads(progress.read_text()))
        except (OSError, ValueError, KeyError, TypeError):
            now = f"unreadable ({progress})"
        live = _part_names(workdir / LIVE_DIR)
        lines.append(f"  {'now' if running else 'stopped at'}: {now}"
                     + (f"; live curves of {', '.join(live)}" if live else ""))
    results = workdir / RESULTS_FILE
    if results.exists():
        frame = read_parquet(results, RESULTS_REMEDY)[["member", "phase", "status"]].drop_duplicates()
        bad = frame[frame.status != "ok"]
        total = frame.member.nunique()
        if bad.empty:
            lines.append(f"  diverged: none of {total} members with results")
        else:
            by_phase = ", ".join(f"{phase} {n}" for phase, n in bad.groupby("phase").member.nunique().items())
            lines.append(f"  diverged: {bad.member.nunique()} of {total} members ({by_phase})")
    return "\n".join(lines)
