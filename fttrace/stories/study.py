"""The stories study: does deletion fine-tuning remove feature F from a story model, or hide it?

Run tree (every phase is one jitted program over all its members, run by the engine, `runner.py`):

  pretrain   seeds x {none, filter}: the ordinary data, and the control pretrained without F (data variant filter)
  finetune   each `none` member x deletions (data variants, `sweep.deletions`) x fine-tuning LRs, constant LR
  recovery   each fine-tuned member, and each control member, on keep_only(F) at `recovery.lr` for the same
             budget (deletion column `control` for the latter)

All data variants live in one resident token array (`lm/corpus.py`); a member's variant is its document range.
Members with the same seed share initialisation and data order (keys derive from the seed and phase only), so
cells are paired by seed. At each of a phase's `eval_steps` every member is measured: held-out LM loss, the rate
of F in stories sampled for headers that ask for F (and for headers that do not), the refusal rate; at a phase's
end, and on the untrained models at pretraining step 0 (their control), linear probes per layer for "the header
asks for F" (`measure.probe_records`: the request is stated only away from the probed positions). Recovery rows
end with `steps_to_pretrained_rate`: the first recovery eval step at which a member's F rate reaches
`recovery.threshold` x the rate of the pretrained (`none`) member of its seed, NaN if never.

Results: WORKDIR/results.parquet in the long format of `results.py` (member, parent, phase, step, metric, value,
status, then seed, pretrain_data, deletion, data, finetune_lr, recovery_lr). As every study kind: orbax
checkpoints with mid-phase resume, the member axis sharded over every device, several processes, `--shard i/N`
(whole seeds) and `fttrace merge`. A few sampled stories per member and eval step go to
WORKDIR/samples/<phase>-<step>.json.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from fttrace.config import positive_int, require
from fttrace.curves import records_first_step
from fttrace.errors import UserError
from fttrace.lm import corpus as corpus_lib, phases
from fttrace.lm.decode import generate_members
from fttrace.lm.measure import decode_samples, feature_rate, probe_members, probe_records, prompts_of, refusal_rate
from fttrace.lm.phases import LanguageModelStudy, check_model, check_phase, check_protocols, rows_of, \
    stacked_parents
from fttrace.model import Transformer
from fttrace.results import write_json
from fttrace.runner import PhaseRunner
from fttrace.stories import builders, detectors, prepared, tokens as tokens_lib
from fttrace.stories.variants import STEPS, Variant
from fttrace.stories.record import FEATURES
from fttrace.train import PHASE_IDS, member_key

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
        isinstance(v, (int, float)) and v > 0 for v in s.finetune_lr), "sweep.finetune_lr",
        "must be a non-empty tuple of positive learning rates")
    g = config.generate
    positive_int(config, "generate.prompts")
    positive_int(config, "generate.max_new")
    require(g.temperature > 0, "generate.temperature", "must be positive")
    require(isinstance(g.top_k, int) and 0 <= g.top_k <= d.vocab_size, "generate.top_k",
            f"must be in [0, data.vocab_size], got {g.top_k!r}")
    for key in ("examples", "positions", "steps"):
        positive_int(config, f"probe.{key}")
    require(0 < config.recovery.threshold <= 1, "recovery.threshold", "must be in (0, 1]")


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


def build_data(config, workdir: epath.Path):
    """Through the dataset's TFDS builder: the tokenizer (trained once on the first `data.train_size` training
    stories, kept beside the dataset), the corpus of every variant, the validation arrays, the probes'
    validation headers (`measure.probe_records`), and the detectors' agreement with the validation labels."""
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
    return (tok, corpus_lib.concatenate(variants), tokens_lib.encode_records(valid, tok),
            tokens_lib.encode_records(probe_records(valid), tok), detectors.agreement(valid))


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
    rc += [dict(parent=row.member, seed=row.seed, pretrain_data="filter", deletion="control", data="keep_only",
                finetune_lr=np.nan, recovery_lr=float(config.recovery.lr)) for row in control.itertuples()]
    recovery = pd.DataFrame(rc)
    recovery.insert(0, "member", len(pretrain) + len(finetune) + np.arange(len(recovery)))
    return {"pretrain": pretrain, "finetune": finetune, "recovery": recovery}


# ---------------------------------------------------------------- the study kind


class StoriesStudy(LanguageModelStudy):
    """The stories study kind (runner.py)."""

    PHASES = PHASES
    KEY_PHASES = KEY_PHASES

    def member_tables(self) -> dict:
        return member_tables(self.config)

    def prepare(self, workdir, placement) -> dict:
        config = self.config
        self.workdir = epath.Path(workdir)
        self.tokenizer, self.corpus, self.validation, probe_headers, self.detectors = build_data(config, self.workdir)
        self.model_cfg = phases.model_config(config, self.tokenizer.vocab_size)
        self.model = Transformer(self.model_cfg)
        self.shared = self.shared_inputs(placement)
        g, f = config.generate, config.data.feature
        self.asked = prompts_of(self.validation, f, g.prompts, 0, "generate.prompts")
        self.unasked = prompts_of(self.validation, f, 0, g.prompts, "generate.prompts")
        half = config.probe.examples // 2
        self.probe_prompts = prompts_of(probe_headers, f, half, half, "probe.examples")
        self.probe_train = np.arange(2 * half) % 2 == 0  # alternate rows: both classes on both sides
        self._generate = jax.jit(lambda params, prompts, lengths, keys: generate_members(
            self.model_cfg, params, prompts, lengths, keys, g.max_new, g.temperature, g.top_k,
            config.eval.member_batch))
        p = config.probe
        self._probe = jax.jit(lambda params: probe_members(self.model, params, self.probe_prompts,
                                                           self.probe_train, p.positions, p.steps, p.lr))
        return dict(study=STUDY, vocab_size=self.tokenizer.vocab_size,
                    documents={n: hi - lo for n, (lo, hi) in self.corpus.ranges.items()})

    # -- measurements

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
            out = {}
            for name, prompts in (("asked", self.asked), ("unasked", self.unasked)):
                samples = runner.local(self._generate(state.params, jnp.asarray(prompts.tokens),
                                                      jnp.asarray(prompts.lengths), keys), members)
                texts = [decode_samples(self.tokenizer, member) for member in samples]
                suffix = "" if name == "asked" else "_unasked"
                out[f"feature_rate{suffix}"] = np.array([feature_rate(t, f) for t in texts])
                out[f"refusal_rate{suffix}"] = np.array([refusal_rate(t, f) for t in texts])
                if name == "asked":
                    self.write_samples(runner, phase, step, local, texts)
            if final or (phase == "pretrain" and step == 0):
                probes = runner.local(self._probe(state.params), members)
                for layer in range(probes.shape[1]):
                    out[f"probe_acc.layer{layer}"] = probes[:, layer]
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
        t = group.tables
        if runner.store.writes_results:
            self.write_detectors(runner)
        runner.progress.say(f"stories study: vocabulary {self.tokenizer.vocab_size}, variants "
                            + ", ".join(f"{n} {hi - lo}" for n, (lo, hi) in self.corpus.ranges.items()) + " stories")
        pt, ft, rc = t["pretrain"], t["finetune"], t["recovery"]
        pretrain = self.train(runner, group, "pretrain", None, None, None, self.measure(runner, "pretrain", pt))
        runner.progress.say(self.size_line(pretrain))
        finetune = self.train(runner, group, "finetune", pretrain, rows_of(pt, ft), ft.finetune_lr,
                              self.measure(runner, "finetune", ft))
        # Recovery parents: fine-tuned members, then the pretrained ones (the control's): one stacked state.
        parents = stacked_parents((finetune, len(ft)), (pretrain, len(pt)))
        self.train(runner, group, "recovery", parents, rows_of(pd.concat([ft, pt], ignore_index=True), rc),
                   rc.recovery_lr, self.measure(runner, "recovery", rc))

    def write_detectors(self, runner: PhaseRunner) -> None:
        """How the feature detectors that judge the samples agree with the validation labels:
        WORKDIR/detectors.json (exact on generated stories by construction; measured on real ones)."""
        table = {f: dict(dataclasses.asdict(a), accuracy=a.accuracy, precision=a.precision, recall=a.recall)
                 for f, a in self.detectors.items()}
        write_json(self.workdir / "detectors.json", table)
        a = self.detectors[self.config.data.feature]
        runner.progress.say(f"{a.feature} detector against {len(self.validation)} validation labels: accuracy "
                            f"{a.accuracy:.3f}, precision {a.precision:.3f}, recall {a.recall:.3f}")

    @staticmethod
    def headline(results_path) -> str:
        return headline(results_path)


KIND = StoriesStudy


def headline(results_path) -> str:
    """F rate (prompted for F) per phase, eval step and arm, mean over seeds; steps to the pretrained rate."""
    from fttrace.results import read_parquet
    frame = read_parquet(results_path)
    arm = ["deletion", "protocol"] if "protocol" in frame else ["deletion"]  # (a fine-tuning protocol sweep)
    rates = frame[frame.metric == "feature_rate"]
    table = rates.pivot_table(index=["phase", *arm, "finetune_lr"], columns="step", values="value",
                              aggfunc="mean", dropna=False).dropna(how="all").round(3)
    lines = ["Share of stories with the feature when asked for it (mean over seeds), by eval step:",
             table.to_string()]
    reach = frame[frame.metric == "steps_to_pretrained_rate"]
    if len(reach):
        summary = reach.groupby([*arm, "finetune_lr"], dropna=False)["value"].agg(["mean", "count"])
        lines += ["Recovery steps to the pretrained rate (mean over members that reached it):", summary.to_string()]
    return "\n".join(lines)
