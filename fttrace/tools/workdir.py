"""A study's workdir opened for reading (`fttrace.open`): its config, its members, its results and any member's
model, for every study kind, on any device count.

    run = fttrace.open("runs/default")
    run.members                          # every member of every phase: id, phase, group, row, parent, hyperparameters
    run.results                          # results.parquet (long format; see fttrace/engine/results.py)
    run.live()                           # a running sweep: the curves so far of the phases still training
    model = run.model("ft3")             # a MemberModel (fttrace/model/member.py); run.params("ft3") its parameters
    sets = run.heldout()                 # PCFG / Tracr: {"pt", "ft", "ft_shortcut"}: (tokens, answers), held out
    model.accuracy(sets["pt"], ablate=Ablation(neurons=run.pruned_units("ft3", k=5)))
    stack = run.models(["ft0", "ft1"])   # a MemberStack: the same calls, vmapped over the members
    run.steps("ft3"), run.model("ft3", step=run.steps("ft3")[0])   # the kept mid-training checkpoints
    run.curve("ft3", "pt_acc")           # one member's training curve: phase, step, value
    run.vocabulary.to_str_tokens(sets["pt"][0][0])                 # the task's tokens as strings

A member's parameters are read from its phase's checkpoint (the newest, or `step=`), un-padded, with a fine-tuning
protocol's reparameterisation (LoRA, SVF) merged into plain weights; a compiled (Tracr) pretrained member is the
compiled model. A workdir made by `fttrace merge` reads each member from the shard workdir that trained it.
"""
from __future__ import annotations

import functools

import jax
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from fttrace.engine.checkpoint import CHECKPOINTS_DIR, read_params, saved_steps
from fttrace.errors import UserError
from fttrace.model.member import MemberModel, MemberStack
from fttrace.model.vocab import Vocabulary
from fttrace.engine.results import RESULTS_FILE, RESULTS_REMEDY, ResultsStore, read_manifest, read_parquet, \
    workdir_path


class Run:
    """One workdir, read lazily: nothing heavier than the manifest is loaded before it is asked for."""

    def __init__(self, workdir):
        self.workdir = workdir_path(workdir)
        self.manifest = read_manifest(self.workdir)
        self.config = ml_collections.ConfigDict(self.manifest["config"])
        self.study = self.config.get("study") or self.config.task.name

    def __repr__(self) -> str:
        return f"Run({str(self.workdir)!r}: {self.study}, {len(self.members)} members, {self.manifest['status']})"

    @functools.cached_property
    def results(self) -> pd.DataFrame:
        path = self.workdir / RESULTS_FILE
        if not path.exists():
            raise UserError(f"{self.workdir} has no results yet ({path} is missing)")
        return read_parquet(path, RESULTS_REMEDY)

    def live(self) -> pd.DataFrame | None:
        """The curves so far of the phases still training (rows as in `results`; None when none is)."""
        return ResultsStore(self.workdir).read_live()

    @functools.cached_property
    def _kind(self):
        """The study kind (fttrace/engine/runner.py) of the run."""
        from fttrace.engine.runner import study_kind
        return study_kind(self.config)(self.config)

    @property
    def _lm(self) -> bool:
        return self.config.get("study") is not None

    @functools.cached_property
    def groups(self) -> list:
        """The run's groups, as the run built them (its shard of the grid, if it ran one)."""
        groups = self._kind.groups()
        shard = self.manifest.get("shard")
        return self._kind.shard(groups, *shard) if shard else groups

    @functools.cached_property
    def members(self) -> pd.DataFrame:
        """Every member of every phase: member, phase, group, row (its place on the phase's member axis), parent,
        and its hyperparameters."""
        tables = []
        for group in self.groups:
            for phase, table in self._kind.phase_tables(group).items():
                tables.append(table.assign(phase=phase, group=group.index, row=np.arange(len(table))))
        frame = pd.concat(tables, ignore_index=True)
        frame = frame.drop(columns=[c for c in frame if c.endswith("_index")])
        first = ["member", "phase", "group", "row", "parent"]
        return frame[first + [c for c in frame if c not in first]]

    def member(self, member) -> pd.Series:
        """The members-table row of one member."""
        rows = self.members[self.members.member.astype(str) == str(member)]
        if rows.empty:
            some = ", ".join(map(str, self.members.member.head(4)))
            raise UserError(f"no member {member!r} in {self.workdir} (members are named like {some}, ...)")
        return rows.iloc[0]

    @functools.cached_property
    def task(self):
        """The task (PCFG grammar or compiled program): its sampler, labels and held-out inputs."""
        if self._lm:
            raise UserError(f"{self.workdir} holds a {self.study} study, whose data is its prepared corpus, not a task")
        from fttrace.answer.tasks.registry import build_task
        return build_task(self.config)

    def heldout(self, examples: int | None = None, name: str = "eval") -> dict:
        """The held-out sets {"pt", "ft", "ft_shortcut"}: (tokens [N, T], answers [N]) as numpy. By default the very
        sets the run logged every phase on (`eval.examples`, `name="eval"`); `name="test"` gives those of the
        regime diagnostics, any other name a fresh draw."""
        from fttrace.engine.train import eval_sets_for
        task = self.task
        draw = lambda: eval_sets_for(task, examples or self.config.eval.examples, self.config.eval.seed,  # noqa: E731
                                     name)
        sets = draw() if name == "test" else jax.jit(draw)()  # the test sets' distinct choice runs on the host
        return jax.tree.map(np.asarray, sets)

    @functools.cached_property
    def vocabulary(self) -> Vocabulary:
        """The task's token ids as strings and back (fttrace/model/vocab.py): a PCFG task's or a Tracr program's
        token names, a language-model study's SentencePiece pieces."""
        if not self._lm:
            return self.task.vocabulary()
        from fttrace.lm.tokenizer import Tokenizer
        return Tokenizer.load(self.tokenizer_path).vocabulary()

    @property
    def tokenizer_path(self) -> epath.Path:
        """A language-model study's SentencePiece model (the one its run trained); one line if it is missing."""
        if not self._lm:
            raise UserError(f"{self.workdir} is not a language-model study: its tokens are named by its task")
        if sources := self.manifest.get("merged_from"):
            return Run(sources[0]["workdir"]).tokenizer_path
        path = epath.Path(self._kind.tokenizer_path(self.workdir))
        if not path.exists():
            raise UserError(f"the tokenizer of {self.workdir} is missing ({path})")
        return path

    def curve(self, member, metric: str) -> pd.DataFrame:
        """One member's `metric` over training: a frame of phase, step, value, in step order, without the steps
        at which the member had no value (after it stopped, or where the metric was not measured)."""
        row = self.member(member)
        mine = self.results[self.results.member.astype(str) == str(row.member)]
        rows = mine[mine.metric == metric]
        if rows.empty:
            known = ", ".join(sorted(mine.metric.unique())[:12])
            raise UserError(f"member {row.member!r} has no metric {metric!r} in {self.workdir} (it has {known})")
        rows = rows[np.isfinite(rows.value.to_numpy(np.float64))]
        return rows[["phase", "step", "value"]].sort_values(["step"], kind="stable").reset_index(drop=True)

    # ------------------------------------------------------------------ parameters

    def params(self, member, step: int | None = None):
        """One member's parameters (numpy), from its phase's checkpoint at `step` (default its newest)."""
        row = self.member(member)
        if sources := self.manifest.get("merged_from"):
            return self._source_of(row.member, sources).params(row.member, step)
        group = self._group(member)
        if row.phase == "pretrain" and not self._lm and self.task.pretrained_model is not None:
            return self.task.pretrained_model.params
        stacked, _ = self._read(f"g{row.group}-{row.phase}", step)
        params = jax.tree.map(lambda x: x[row.row], stacked)
        if "model" in params:  # a fine-tuning protocol's tree: merge it into the weights the model reads
            from fttrace.engine import protocols
            params = jax.tree.map(np.asarray, protocols.effective_params(self._kind.protocol_layout(group), params))
        return params

    def model(self, member, step: int | None = None) -> MemberModel:
        """One member's MemberModel: its model config, its parameters (`params`) and its members-table row."""
        row = self.member(member)
        params = self.params(row.member, step)
        if self._lm:
            from fttrace.lm.phases import model_config
            cfg = model_config(self.config, params["embed"]["embedding"].shape[0], self._group(member).shape)
        else:
            cfg = self._group(member).model
        info = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
        return MemberModel(cfg, params, str(row.member), info, vocab=lambda: self.vocabulary)

    def models(self, members=None, step: int | None = None) -> MemberStack:
        """Several members' models as one MemberStack (their parameters stacked, every call vmapped over them):
        `members` a list of ids (default every member of the run), each at `step` (default its newest). The members
        must share one model shape (one group)."""
        ids = list(self.members.member) if members is None else list(members)
        return MemberStack([self.model(member, step) for member in ids])

    def steps(self, member) -> list[int]:
        """The steps at which the member's phase kept a checkpoint: the newest `checkpoint.keep` and the log-spaced
        `checkpoint.keep_log_spaced` (fttrace/engine/checkpoint.py), the last included."""
        row = self.member(member)
        directory = self._checkpoints / f"g{row.group}-{row.phase}"
        return saved_steps(directory) if directory.exists() else []

    def pruned_units(self, member, kind: str = "neurons", k: int | None = None) -> list[tuple[int, int]]:
        """The units the targeted pruning of `member` removed first ((layer, index), in removal order; `kind`
        "neurons" or "heads"), the first `k` of them (default all it recorded)."""
        rows = self.results[(self.results.phase == "prune") & (self.results.member.astype(str) == str(member))
                            & (self.results.metric == f"{kind}.unit")].sort_values("step")
        if rows.empty:
            raise UserError(f"{self.workdir} has no pruning order of {kind} for member {member!r} (is 'prune' among "
                            "its evals, and was the member pruned?)")
        cfg = self._group(member).model  # (pruning runs in PCFG and Tracr studies only)
        per_layer = cfg.mlp if kind == "neurons" else cfg.n_heads
        units = rows.value.to_numpy(np.int64)[:k]
        return [tuple(map(int, divmod(u, per_layer))) for u in units]

    def export(self, member, path, step: int | None = None) -> str:
        """Write one member (parameters, model config, members-table row) to an .npz file (member_model.load_export)."""
        return self.model(member, step).export(path)

    # ------------------------------------------------------------------ where parameters live

    def _group(self, member):
        index = self.member(member).group
        return next(g for g in self.groups if g.index == index)

    @property
    def _checkpoints(self) -> epath.Path:
        return self.workdir / CHECKPOINTS_DIR

    @functools.lru_cache(maxsize=8)
    def _read(self, part: str, step: int | None):
        directory = self._checkpoints / part
        if not directory.exists():
            raise UserError(f"{self.workdir} keeps no checkpoint of phase {part} ({directory} is missing)")
        return read_params(directory, step)

    def _source_of(self, member, sources: list[dict]) -> "Run":
        for source in sources:
            opened = Run(source["workdir"])
            if (opened.members.member.astype(str) == str(member)).any():
                return opened
        raise UserError(f"member {member!r} is in none of the shard workdirs {self.workdir} was merged from")
