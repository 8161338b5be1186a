"""The stories study: does deletion fine-tuning remove feature F from a story model, or hide it?

Run tree (every phase is one jitted program over all its members, run by the engine, `runner.py`):

  pretrain   seeds x {none, filter}: the ordinary data, and the control pretrained without F (data variant filter)
  finetune   each `none` member x deletions (data variants, `sweep.deletions`) x fine-tuning LRs, constant LR;
             to a criterion: a member stops (frozen, its `stop_step` recorded) at the first eval step at which
             its F rate when asked falls below `finetune.stop_below` (0: never), so deletions and LRs are
             compared at equal deletion
  recovery   each fine-tuned member, and each control member, on keep_only(F) at `recovery.lr` for the same
             budget; the control also at `recovery.lr` x each of `recovery.control_lr_factors` (deletion column
             `control`, or `control x10` for a factor 10)

All data variants live in one resident token array (`lm/corpus.py`); a member's variant is its document range.
Members with the same seed share initialisation and data order (keys derive from the seed and phase only), so
cells are paired by seed. At each of a phase's `eval_steps` every member is measured: held-out LM loss (on every
validation story, `val_loss`, and on those without F, `val_loss.without_feature`), the rate
of F in stories sampled for headers that ask for F (and for headers that do not), the refusal rate; at a phase's
end, and on the untrained models at pretraining step 0 (their control), linear probes per layer for "the header
asks for F" (`measure.probe_records`: the request is stated only away from the probed positions), and story
probes on the story text alone for "this story has F" beside a control target (`probe_story.layer<l>`,
`probe_story_control.layer<l>`: `measure.story_probe_set`). Recovery rows
end with `steps_to_pretrained_rate`: the first recovery eval step at which a member's F rate reaches
`recovery.threshold` x the rate of the pretrained (`none`) member of its seed, NaN if never (censored at the
budget).

Every rate is read against its nulls: the same model's rate when the header does not ask for F (`feature_gap`:
asked minus not asked, with its binomial standard error `feature_gap_se` over the `feature_samples` stories
sampled per side), the untrained models (pretraining step 0) and the control pretrained without F. The *regime*
(`regime_lines`, printed after pretraining and at the head of every summary): per seed, whether the pretrained model
has the capability at all (its gap exceeds 1.96 standard errors) -- a verdict on deletion or recovery of a seed
whose model lacks it describes nothing.

Results: WORKDIR/results.parquet in the long format of `results.py` (member, parent, phase, step, metric, value,
status, then seed, pretrain_data, deletion, data, finetune_lr, recovery_lr). As every study kind: orbax
checkpoints with mid-phase resume, the member axis sharded over every device, several processes, `--shard i/N`
(whole seeds) and `fttrace merge`. A few sampled stories per member and eval step go to
WORKDIR/samples/<phase>-<step>.json.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from fttrace.config import finite_number, positive_int, require
from fttrace.engine.curves import records_first_step
from fttrace.errors import UserError
from fttrace.lm import corpus as corpus_lib
from fttrace.lm.decode import generate_members
from analysis.schema import beyond_noise
from fttrace.lm.measure import decode_samples, probe_members, proportion_gap
from fttrace.stories.measure import feature_rate, probe_records, prompts_of, refusal_rate, story_probe_set
from fttrace.lm.phases import LanguageModelStudy, check_model, check_phase, check_protocols, rows_of, \
    stacked_parents
from fttrace.engine.results import write_json
from fttrace.engine.runner import PhaseRunner
from fttrace.stories import builders, detectors, prepared, tokens as tokens_lib
from fttrace.stories.variants import STEPS, Variant
from fttrace.stories.record import FEATURES
from fttrace.engine.train import PHASE_IDS, member_key

STUDY = "stories_twist"
PHASES = ("pretrain", "finetune", "recovery")
KEY_PHASES = {"pretrain": "pretrain", "finetune": "finetune", "recovery": "reft"}  # names in train.PHASE_IDS
DELETIONS = tuple(s for s in STEPS if s not in ("none", "keep_only"))  # the data variants that delete F


# ---------------------------------------------------------------- config


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check a stories config; the error names the offending key."""
    for section in ("data", "model", "pretrain", "finetune", "recovery", "sweep", "generate", "probe", "eval"):
        require(section in config, section, "missing section")
    d = config.data
    require(d.get("dataset", "generated") in DATASETS, "data.dataset",
            f"unknown dataset {d.get('dataset')!r}; known: {', '.join(DATASETS)}")
    require(d.feature in FEATURES, "data.feature", f"unknown feature {d.feature!r}; known: {', '.join(FEATURES)}")
    require(d.source in FEATURES and d.source != d.feature, "data.source",
            f"must be a feature other than {d.feature}, got {d.source!r}")
    for key in ("train_size", "validation_size", "vocab_size"):
        positive_int(config, f"data.{key}")
    check_model(config)
    for phase in PHASES:
        check_phase(config, phase)
    check_protocols(config, PHASES)
    for key in ("pretrain.lr", "recovery.lr"):
        section, name = key.split(".")
        require(isinstance(config[section][name], (int, float)) and config[section][name] > 0, key,
                "must be a positive learning rate")
    s = config.sweep
    positive_int(config, "sweep.seeds")
    require(isinstance(s.deletions, tuple) and len(s.deletions) > 0, "sweep.deletions", "must be a non-empty tuple")
    for name in s.deletions:
        require(isinstance(name, str) and all(step in DELETIONS for step in name.split("+")),
                "sweep.deletions", f"unknown deletion {name!r}; known steps: {', '.join(DELETIONS)}")
    require(isinstance(s.finetune_lr, tuple) and len(s.finetune_lr) > 0 and all(
        finite_number(v) and v > 0 for v in s.finetune_lr), "sweep.finetune_lr",
        "must be a non-empty tuple of positive finite learning rates")
    g = config.generate
    positive_int(config, "generate.prompts")
    positive_int(config, "generate.max_new")
    require(finite_number(g.temperature) and g.temperature > 0,
            "generate.temperature", f"must be a positive finite number, got {g.temperature!r}")
    require(isinstance(g.top_k, int) and 0 <= g.top_k <= d.vocab_size, "generate.top_k",
            f"must be in [0, data.vocab_size], got {g.top_k!r}")
    for key in ("examples", "positions", "steps"):
        positive_int(config, f"probe.{key}")
    require(0 < config.recovery.threshold <= 1, "recovery.threshold", "must be in (0, 1]")
    stop = config.finetune.get("stop_below", 0.0)
    require(isinstance(stop, (int, float)) and 0 <= stop <= 1, "finetune.stop_below",
            f"must be a rate in [0, 1] (0: fine-tune for the whole budget), got {stop!r}")
    factors = config.recovery.get("control_lr_factors", (1.0,))
    require(isinstance(factors, tuple) and len(factors) > 0 and len(set(factors)) == len(factors) and all(
        isinstance(v, (int, float)) and v > 0 for v in factors), "recovery.control_lr_factors",
        f"must be a non-empty tuple of distinct positive factors of recovery.lr, got {factors!r}")


# ---------------------------------------------------------------- data


DATASETS = ("generated", "tinystories_instruct")


def data_builder(config, workdir: epath.Path):
    """The prepared TFDS builder of `data.dataset`: the story generator (no download), or the public
    TinyStories-Instruct files from `data.manual_dir`; prepared under `data.data_dir` (default WORKDIR/data)."""
    d = config.data
    data_dir = epath.Path(d.data_dir) if d.get("data_dir") else workdir / "data"
    if d.get("dataset", "generated") == "generated":
        builder = builders.generated_builder(data_dir, train_size=d.train_size, validation_size=d.validation_size,
                                             seed=d.seed)
    else:
        builder = builders.instruct_builder(data_dir)
    return builders.prepare(builder, manual_dir=d.get("manual_dir") or None)


@dataclasses.dataclass(frozen=True)
class StoriesData:
    """What the stories study reads, built through the dataset's TFDS builder (`build_data`)."""
    tokenizer: Any           # trained once on the first `data.train_size` training stories, kept beside the dataset
    corpus: corpus_lib.Corpus  # every data variant, one resident token array
    validation: Any          # TokenArrays of the validation stories (held-out loss, sampling prompts)
    without_feature: Any     # ... of those without F (their loss: `val_loss.without_feature`)
    probe_headers: Any       # ... of the probes' validation headers (`measure.probe_records`)
    story_probe: tuple       # the story probes' texts and control labels (`measure.story_probe_set`)
    agreement: dict          # the detectors' agreement with the validation labels, per feature


def build_data(config, workdir: epath.Path) -> StoriesData:
    """The stories study's data (StoriesData) through the dataset's TFDS builder."""
    d = config.data
    builder = data_builder(config, workdir)
    tok = prepared.tokenizer_for(builder, d.vocab_size, max_texts=d.train_size)
    options = dict(feature=d.feature, source=d.source, seed=d.seed)
    names = ("none", "keep_only") + tuple(dict.fromkeys(("filter",) + tuple(config.sweep.deletions)))
    variants = {}
    for name in names:
        variants[name] = prepared.token_arrays(builder, "train", tok, Variant.parse(name, **options), d.train_size)
        if not len(variants[name]):
            raise UserError(f"data variant {name!r} leaves no training story (data.train_size={d.train_size})")
    valid = builders.read_records(builder, "validation", d.validation_size)
    return StoriesData(
        tokenizer=tok, corpus=corpus_lib.concatenate(variants), validation=tokens_lib.encode_records(valid, tok),
        without_feature=tokens_lib.encode_records([r for r in valid if not r.has(d.feature)], tok),
        probe_headers=tokens_lib.encode_records(probe_records(valid), tok),
        story_probe=story_probe_set(valid, tok, d.feature, config.probe.examples, config.model.max_len,
                                    "probe.examples"),
        agreement=detectors.agreement(valid))


# ---------------------------------------------------------------- members


def member_tables(config) -> dict:
    """One table per phase: member id, parent id and hyperparameters. Ids number every seed's members, so a shard
    of the seeds names its members as the whole run does."""
    s = config.sweep
    pt = [dict(seed=seed, pretrain_data=arm, deletion=arm, data=arm, finetune_lr=np.nan, recovery_lr=np.nan)
          for arm in ("none", "filter") for seed in range(s.seeds)]
    pretrain = pd.DataFrame(pt)
    pretrain.insert(0, "member", np.arange(len(pretrain)))
    pretrain.insert(1, "parent", None)
    base = pretrain[pretrain.pretrain_data == "none"]
    finetune = pd.DataFrame([dict(parent=row.member, seed=row.seed, pretrain_data="none", deletion=deletion,
                                  data=deletion, finetune_lr=float(lr), recovery_lr=np.nan)
                             for deletion in s.deletions for lr in s.finetune_lr for row in base.itertuples()])
    finetune.insert(0, "member", len(pretrain) + np.arange(len(finetune)))
    control = pretrain[pretrain.pretrain_data == "filter"]
    rc = [dict(parent=row.member, seed=row.seed, pretrain_data="none", deletion=row.deletion, data="keep_only",
               finetune_lr=row.finetune_lr, recovery_lr=float(config.recovery.lr)) for row in finetune.itertuples()]
    rc += [dict(parent=row.member, seed=row.seed, pretrain_data="filter", deletion=control_arm(factor),
                data="keep_only", finetune_lr=np.nan, recovery_lr=float(config.recovery.lr) * factor)
           for factor in config.recovery.get("control_lr_factors", (1.0,)) for row in control.itertuples()]
    recovery = pd.DataFrame(rc)
    recovery.insert(0, "member", len(pretrain) + len(finetune) + np.arange(len(recovery)))
    return {"pretrain": pretrain, "finetune": finetune, "recovery": recovery}


def control_arm(factor: float) -> str:
    """The deletion column of the control's recovery at `factor` x recovery.lr: `control`, `control x10`."""
    return "control" if factor == 1 else f"control x{factor:g}"


# ---------------------------------------------------------------- rates against their null


HAS, LACKS = "has the capability", "LACKS the capability: its verdicts describe nothing"


def regime_lines(frame: pd.DataFrame, feature: str = "F") -> list[str]:
    """The regime of a stories run (its results rows): per seed, the pretrained model's F rate asked and not asked,
    the gap with its standard error and whether the model has the capability (`analysis.schema.beyond_noise`), beside the
    control
    pretrained without F and the untrained model; then how many seeds have it."""
    pre = frame[(frame.phase == "pretrain") & frame.metric.isin(
        ("feature_rate", "feature_rate_unasked", "feature_gap", "feature_gap_se", "feature_samples"))]
    if not (pre.metric == "feature_gap_se").any():
        return []
    wide = pre.pivot_table(index=["seed", "pretrain_data", "step"], columns="metric", values="value")
    last, first = pre.step.max(), pre.step.min()
    lines = [f"Regime: does the pretrained model write {feature} when asked? (step {last}: rate asked / not asked, "
             f"their gap [1.96 SE])"]
    has = []
    for seed in sorted(pre.seed.unique()):
        row = wide.loc[(seed, "none", last)]
        has.append(bool(beyond_noise(row.feature_gap, row.feature_gap_se)))
        control = wide.feature_rate.get((seed, "filter", last), np.nan)
        untrained = wide.feature_rate.get((seed, "none", first), np.nan)
        lines.append(f"  seed {seed}: {row.feature_rate:.2f} / {row.feature_rate_unasked:.2f}, gap "
                     f"{row.feature_gap:+.2f} [{1.96 * row.feature_gap_se:.2f}] over {row.feature_samples:.0f} stories "
                     f"a side: {HAS if has[-1] else LACKS}"
                     f"; the control without {feature}: {control:.2f} asked; untrained: {untrained:.2f}")
    lines.append(f"  {sum(has)} of {len(has)} seeds have the capability.")
    return lines


# ---------------------------------------------------------------- the study kind


class StoriesStudy(LanguageModelStudy):
    """The stories study kind (runner.py)."""

    PHASES = PHASES
    KEY_PHASES = KEY_PHASES

    def member_tables(self) -> dict:
        return member_tables(self.config)

    def tokenizer_path(self, workdir):
        """Where the study's tokenizer is, beside its prepared dataset (fttrace.open's vocabulary)."""
        d = self.config.data
        return prepared.tokenizer_path(data_builder(self.config, epath.Path(workdir)), d.vocab_size,
                                       max_texts=d.train_size)

    def prepare(self, workdir, placement) -> dict:
        config = self.config
        self.workdir = epath.Path(workdir)
        self.data = build_data(config, self.workdir)
        self.tokenizer, self.corpus, self.validation = self.data.tokenizer, self.data.corpus, self.data.validation
        self.vocab_size = self.tokenizer.vocab_size
        # held-out loss on stories without F too (`val_loss.without_feature`): deletion's side effect on the rest
        self.shared = self.shared_inputs(placement, {"without_feature": self.data.without_feature})
        g, f = config.generate, config.data.feature
        self.asked = prompts_of(self.validation, f, g.prompts, 0, "generate.prompts")
        self.unasked = prompts_of(self.validation, f, 0, g.prompts, "generate.prompts")
        half = config.probe.examples // 2
        self.probe_prompts = prompts_of(self.data.probe_headers, f, half, half, "probe.examples")
        self.probe_train = np.arange(2 * half) % 2 == 0  # alternate rows: both classes on both sides
        return dict(study=STUDY, vocab_size=self.tokenizer.vocab_size,
                    documents={n: hi - lo for n, (lo, hi) in self.corpus.ranges.items()})

    # -- measurements

    def build_measures(self) -> None:
        """Sampling and the probes, jitted for the current model (phases.LanguageModelStudy.use_group)."""
        config, cfg, model = self.config, self.model_cfg, self.model
        g, p = config.generate, config.probe
        self._generate = jax.jit(lambda params, prompts, lengths, keys: generate_members(
            cfg, params, prompts, lengths, keys, g.max_new, g.temperature, g.top_k, config.eval.member_batch))
        self._probe = jax.jit(lambda params: probe_members(model, params, self.probe_prompts, self.probe_train,
                                                           p.positions, p.steps, p.lr))
        stories, control = self.data.story_probe
        targets = np.stack([stories.asks, control])  # F, then the control target
        self._story_probe = jax.jit(lambda params: probe_members(
            model, params, stories, np.arange(len(control)) % 2 == 0, p.positions, p.steps, p.lr, targets=targets))

    def measure(self, runner: PhaseRunner, phase: str, members: pd.DataFrame):
        """measure(state, step, final, records) of one phase: the rates of F in sampled stories (asked, unasked),
        the refusal rates; probes at the phase's end and on the untrained models (pretraining step 0) as their
        control; for recovery, at the end, the step at which each member regained its seed's pretrained rate."""
        f = self.config.data.feature
        local = members.iloc[runner.local_rows(members)]
        seeds = runner.placement.place(members.seed.to_numpy(np.int32))
        base = jax.vmap(lambda s: member_key(self.config.seed, s, PHASE_IDS["eval"]))(seeds)
        reference = self.pretrained_rates(runner, local) if phase == "recovery" else None

        def at(state, step, final, records):
            when = PHASE_IDS[KEY_PHASES[phase]] * 1_000_003 + step  # one sampling stream per (seed, phase, step)
            keys = jax.vmap(lambda k: jax.random.fold_in(k, when))(base)
            out, both = {}, []
            probing = final or (phase == "pretrain" and step == 0)
            sets = 2 + 2 * probing  # the samples asking for F and the unasked ones, and the two probes
            runner.progress.expect(sets, sets * len(members))
            for name, prompts in (("asked", self.asked), ("unasked", self.unasked)):
                samples = runner.local(self._generate(state.params, jnp.asarray(prompts.tokens),
                                                      jnp.asarray(prompts.lengths), keys), members)
                runner.progress.done(len(members))
                texts = [decode_samples(self.tokenizer, member) for member in samples]
                suffix = "" if name == "asked" else "_unasked"
                out[f"feature_rate{suffix}"] = np.array([feature_rate(t, f) for t in texts])
                out[f"refusal_rate{suffix}"] = np.array([refusal_rate(t, f) for t in texts])
                both.append(texts)
                if name == "asked":
                    self.write_samples(runner, phase, step, local, texts)
            n = self.config.generate.prompts
            out["feature_samples"] = np.full(len(local), float(n))
            out["feature_gap"], out["feature_gap_se"] = proportion_gap(out["feature_rate"], out["feature_rate_unasked"],
                                                                       n, n)
            shares = [detectors.shares(a + u) for a, u in zip(*both)]  # per member, over all of its stories
            for other in FEATURES:  # side effects: every other feature's rate
                if other != f:
                    out[f"other_rate.{other}"] = np.array([member[other] for member in shares])
            if probing:
                probes = runner.local(self._probe(state.params), members)
                runner.progress.done(len(members))
                story = runner.local(self._story_probe(state.params), members)  # [M, (F, control), L+1]
                runner.progress.done(len(members))
                for layer in range(probes.shape[1]):
                    out[f"probe_acc.layer{layer}"] = probes[:, layer]
                    out[f"probe_story.layer{layer}"] = story[:, 0, layer]
                    out[f"probe_story_control.layer{layer}"] = story[:, 1, layer]
            if final and reference is not None:
                curve = [(s, {"feature_rate": runner.local(m["feature_rate"], members)}) for s, m in records]
                curve.append((step, {"feature_rate": out["feature_rate"]}))
                target = np.where(reference > 0, self.config.recovery.threshold * reference, np.nan)
                out.update(pretrained_rate=reference,
                           steps_to_pretrained_rate=records_first_step(curve, "feature_rate", target))
            runner.progress.say(f"group {runner.index} {phase}: step {step}/{self.config[phase].steps}, mean {f} "
                                f"rate {np.nanmean(out['feature_rate']):.3f}")
            return out
        return at

    def pretrained_rates(self, runner: PhaseRunner, members: pd.DataFrame) -> np.ndarray:
        """The final F rate of the pretrained (`none`) member of each member's seed (a seed whose pretrained model
        never showed F has nothing to regain: its recovery has no target)."""
        pre = runner.store.read_part(runner.part_name("pretrain"))
        pre = pre[(pre.metric == "feature_rate") & (pre.pretrain_data == "none")]
        pre = pre[pre.step == pre.step.max()].set_index("seed")["value"]
        return pre.reindex(members.seed).to_numpy()

    def write_samples(self, runner: PhaseRunner, phase: str, step: int, members: pd.DataFrame, texts,
                      per_member: int = 3) -> None:
        """A few of each member's stories for prompts asking for F: WORKDIR/samples/<phase>-<step>.json (one file
        per process where there are several)."""
        out = {str(m): t[:per_member] for m, t in zip(members.member, texts)}
        (self.workdir / "samples").mkdir(parents=True, exist_ok=True)
        suffix = f".p{jax.process_index()}" if jax.process_count() > 1 else ""
        write_json(self.workdir / "samples" / f"{phase}-{step}{suffix}.json", out)

    # -- the run tree

    def run_group(self, runner: PhaseRunner, group) -> None:
        self.use_group(group)
        t = group.tables
        if runner.store.writes_results:
            self.write_detectors(runner)
        runner.progress.say(f"stories study: vocabulary {self.tokenizer.vocab_size}, variants "
                            + ", ".join(f"{n} {hi - lo}" for n, (lo, hi) in self.corpus.ranges.items()) + " stories")
        pt, ft, rc = t["pretrain"], t["finetune"], t["recovery"]
        pretrain = self.train(runner, group, "pretrain", None, None, None, self.measure(runner, "pretrain", pt))
        runner.progress.say(self.size_line(pretrain))
        if runner.store.writes_results:
            for line in regime_lines(runner.store.read_part(runner.part_name("pretrain")), self.config.data.feature):
                runner.progress.say(line)
        below = self.config.finetune.get("stop_below", 0.0)
        finetune = self.train(runner, group, "finetune", pretrain, rows_of(pt, ft), ft.finetune_lr,
                              self.measure(runner, "finetune", ft),
                              stop=(lambda metrics: metrics["feature_rate"] < below) if below else None)
        # Recovery parents: fine-tuned members, then the pretrained ones (the control's): one stacked state.
        parents = stacked_parents((finetune, len(ft)), (pretrain, len(pt)))
        self.train(runner, group, "recovery", parents, rows_of(pd.concat([ft, pt], ignore_index=True), rc),
                   rc.recovery_lr, self.measure(runner, "recovery", rc))

    def write_detectors(self, runner: PhaseRunner) -> None:
        """How the feature detectors that judge the samples agree with the validation labels:
        WORKDIR/detectors.json (exact on generated stories by construction; measured on real ones)."""
        table = {f: dict(dataclasses.asdict(a), accuracy=a.accuracy, precision=a.precision, recall=a.recall)
                 for f, a in self.data.agreement.items()}
        write_json(self.workdir / "detectors.json", table)
        a = self.data.agreement[self.config.data.feature]
        runner.progress.say(f"{a.feature} detector against {len(self.validation)} validation labels: accuracy "
                            f"{a.accuracy:.3f}, precision {a.precision:.3f}, recall {a.recall:.3f}")

    @staticmethod
    def final_lines(results_path) -> str:
        return final_lines(results_path)


KIND = StoriesStudy


def final_lines(results_path) -> str:
    """The regime (regime_lines), then the F rate (prompted for F) per phase, eval step and arm, mean over seeds;
    deletion stop steps; steps to the pretrained rate."""
    from fttrace.engine.results import read_parquet
    frame = read_parquet(results_path)
    arm = ["deletion", "protocol"] if "protocol" in frame else ["deletion"]  # (a fine-tuning protocol sweep)
    rates = frame[frame.metric == "feature_rate"]
    table = rates.pivot_table(index=["phase", *arm, "finetune_lr"], columns="step", values="value",
                              aggfunc="mean", dropna=False).dropna(how="all").round(3)
    manifest = epath.Path(results_path).parent / "manifest.json"
    feature = json.loads(manifest.read_text())["config"]["data"]["feature"] if manifest.exists() else "F"
    lines = regime_lines(frame, feature) + [
        "Share of stories with the feature when asked for it (mean over seeds), by eval step:", table.to_string()]
    stops = frame[(frame.metric == "stop_step") & (frame.phase == "finetune")]
    if len(stops) and (stops.value >= 0).any():
        stopped = stops.groupby([*arm, "finetune_lr"], dropna=False)["value"].agg(
            stopped=lambda v: f"{int((v >= 0).sum())}/{len(v)}", mean_step=lambda v: v[v >= 0].mean())
        lines += ["Deletion to the criterion: members that stopped, mean stop step:", stopped.to_string()]
    reach = frame[frame.metric == "steps_to_pretrained_rate"]
    if len(reach):
        summary = reach.groupby([*arm, "finetune_lr"], dropna=False)["value"].agg(["mean", "count"])
        lines += ["Recovery steps to the pretrained rate (mean over members that reached it):", summary.to_string()]
    return "\n".join(lines)
