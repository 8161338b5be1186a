"""A workdir's members as Weights & Biases runs (`fttrace wandb WORKDIR`): one run per member, grouped by study.

Each member is a run named by its id, in the group of its study (the workdir's name and its run's fingerprint, the
id its checkpoints carry), with job_type the phase that trained it. Its config is its settings (parent, cell and
every hyperparameter it has; none it lacks); its history is its curves, one metric per curve named
`<phase>/<metric>` and drawn over that phase's own step (`<phase>/step`, W&B's define_metric); its summary is every
measure at its last step, `<phase>/<metric>` too (an evaluation logged once, a curve's end, the final record's
diverged_step and stop_step). The rows are the store's as `fttrace/tools/logged.py` reads them, as for `fttrace
tensorboard`; a value that is not finite (a frozen member's) is left out. Offline (`--mode offline`, or W&B's own
setting), the runs go into W&B's directory, for `wandb sync` to upload later.
"""
from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pandas as pd

from fttrace.errors import UserError
from fttrace.engine.results import read_manifest, workdir_path
from fttrace.tools.logged import is_curve, member_settings, store_rows, with_cells

PROJECT = "fttrace"  # the default W&B project
FINAL = "diverged_step"  # a metric of the final record of every phase that trains its members


@dataclasses.dataclass
class MemberRun:
    """What one member's W&B run holds."""
    member: str
    phase: str  # the phase that trained it: the run's job_type
    config: dict
    history: list[dict]  # wandb.log's records, phase by phase, step by step: {"<phase>/step": s, "<phase>/<m>": v}
    summary: dict  # {"<phase>/<metric>": the value at its last step}

    @property
    def curve_phases(self) -> list[str]:
        return list(dict.fromkeys(k.split("/", 1)[0] for record in self.history for k in record))


def trained_in(rows: pd.DataFrame) -> dict:
    """{member: the phase that trained it}: the phase of its final record, or for a member whose phase still trains
    (or trains nothing, as a compiled model's) the first of its phases in the store."""
    first = rows.drop_duplicates("member").set_index("member").phase
    final = rows[rows.metric == FINAL].drop_duplicates("member").set_index("member").phase
    return dict(first, **final)


def member_runs(rows: pd.DataFrame) -> list[MemberRun]:
    """The W&B run of every member of `rows` (the store's rows, `store_rows`), in the store's order."""
    rows = with_cells(rows)
    if rows.empty:
        return []
    phases = trained_in(rows)
    settings = member_settings(rows[rows.phase == rows.member.map(phases)])
    rows = rows.assign(key=rows.phase + "/" + rows.metric, curve=is_curve(rows))
    rows = rows[np.isfinite(rows.value.astype(float))]
    out = []
    for member, own in rows.groupby("member", sort=False):
        order = {phase: i for i, phase in enumerate(own.phase.unique())}
        own = own.assign(order=own.phase.map(order)).sort_values(["order", "step"], kind="stable")
        history = [{f"{at.phase.iloc[0]}/step": int(step), **dict(zip(at.key, at.value.astype(float)))}
                   for (_, step), at in own[own.curve].groupby(["order", "step"], sort=True)]
        last = own.drop_duplicates("key", keep="last")
        phase = phases[member]
        out.append(MemberRun(member, phase, settings[(phase, member)], history,
                             dict(zip(last.key, last.value.astype(float)))))
    return out


def study_group(workdir, manifest: dict) -> str:
    """The W&B group of a workdir's members: its name and its run's fingerprint (the id its checkpoints carry)."""
    import ml_collections

    from fttrace.engine.checkpoint import run_fingerprint
    from fttrace.engine.runner import run_identity
    identity = run_identity(ml_collections.ConfigDict(manifest["config"]), manifest.get("shard"))
    return f"{workdir.name}-{run_fingerprint(identity)}"


def write_runs(workdir, project: str | None = None, mode: str | None = None, directory=None, say=print) -> int:
    """Write every member of the workdir as a W&B run in `project` (None: PROJECT), `mode` "online" or "offline"
    (None: W&B's own setting, from WANDB_MODE or `wandb offline`), W&B's files under `directory` (None: W&B's own,
    WANDB_DIR or the current directory). Returns how many runs were written. W&B's service writes a run's files out
    after the run finishes; `wandb.teardown()` (which `fttrace wandb` calls) waits for it."""
    project = project or PROJECT
    try:
        import wandb
    except ImportError:
        raise UserError("W&B runs need wandb: pip install 'fttrace[wandb]'") from None
    workdir = workdir_path(workdir)
    group = study_group(workdir, read_manifest(workdir))
    runs = member_runs(store_rows(workdir))
    if not runs:
        raise UserError(f"{workdir} has no results yet: no member to write")
    if directory is not None:
        directory = pathlib.Path(directory)  # W&B writes local files only
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"--dir {directory}: cannot create it ({e.strerror or e})") from None
    settings = wandb.Settings(silent=True, console="off", save_code=False, disable_git=True)
    for member in runs:
        try:
            run = wandb.init(project=project, group=group, job_type=member.phase, name=member.member,
                             config=member.config, mode=mode, dir=directory,
                             reinit="create_new", settings=settings)
        except wandb.errors.Error as e:
            raise UserError(f"W&B refused run {member.member}: {e} (--mode offline writes runs without an account)") \
                from None
        try:
            for phase in member.curve_phases:
                run.define_metric(f"{phase}/step")
                run.define_metric(f"{phase}/*", step_metric=f"{phase}/step")
            for record in member.history:
                run.log(record)
            run.summary.update(member.summary)
            offline, where = run.offline, pathlib.Path(run.dir).parents[1] if run.offline else run.get_project_url()
        finally:
            run.finish()
    say(f"{len(runs)} W&B runs (one per member) in project {project}, group {group}: " +
        (f"offline, under {where} (`wandb sync` uploads them)" if offline else str(where)))
    return len(runs)
