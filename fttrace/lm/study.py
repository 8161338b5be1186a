"""The stories study: does deletion fine-tuning remove feature F from a story model, or hide it?

Run tree (every phase is one jitted program over all its members, vmapped):

  pretrain   seeds x {none, filter}: the ordinary data, and the control pretrained without F (protocol filter)
  finetune   each `none` member x deletion protocols x fine-tuning LRs, constant LR (the deletion)
  recovery   each fine-tuned member, and each control member, on keep_only(F) at `recovery.lr` for the same
             budget (protocol column `control` for the latter)

All data variants live in one resident token array (`corpus.py`); a member's variant is its document range.
Members with the same seed share initialisation and data order (keys derive from the seed and phase only), so
cells are paired by seed. At each of a phase's `eval_steps` every member is measured: held-out LM loss, the rate
of F in stories sampled for headers that ask for F (and for headers that do not), the refusal rate; at a phase's
end, and on the untrained models at pretraining step 0 (their control), linear probes per layer for "the header
asks for F" (`measure.probe_records`: the request is stated only away from the probed positions). Recovery rows
end with `steps_to_pretrained_rate`: the first recovery eval step at which a member's F rate reaches
`recovery.threshold` x the rate of the pretrained (`none`) member of its seed, NaN if never.

Results: WORKDIR/results.parquet in the long format of `results.py` (member, parent, phase, step, metric, value,
status, then seed, pretrain_protocol, protocol, data, finetune_lr, recovery_lr). Each finished phase writes its
part and its members' final parameters (WORKDIR/checkpoints/<phase>.msgpack); a few sampled stories per member
and eval step go to WORKDIR/samples/<phase>-<step>.json. A rerun of the same config skips
finished phases (resume at phase granularity). One process; the member axis is not sharded.
"""
from __future__ import annotations

import dataclasses
import sys
import types

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
from fttrace.lm.measure import (decode_samples, feature_rate, probe_members, probe_records, prompts_of,
                                 refusal_rate)
from fttrace.lm.phases import check_model, check_phase
from fttrace.lm.steps import eval_loss
from fttrace.model import Transformer
from fttrace.results import ResultsStore, write_json
from fttrace.stories import builders, detectors, prepared, tokens as tokens_lib
from fttrace.stories.protocols import STEPS, Protocol
from fttrace.stories.record import FEATURES
from fttrace.train import PHASE_IDS, fan_out, member_key, member_keys

STUDY = "stories_twist"
PHASES = ("pretrain", "finetune", "recovery")
KEY_PHASES = {"pretrain": "pretrain", "finetune": "finetune", "recovery": "reft"}  # names in train.PHASE_IDS
DELETION_PROTOCOLS = tuple(s for s in STEPS if s not in ("none", "keep_only"))
HYPER_COLUMNS = ("seed", "pretrain_protocol", "protocol", "data", "finetune_lr", "recovery_lr")


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
    for key in ("pretrain.lr", "recovery.lr"):
        section, name = key.split(".")
        require(isinstance(config[section][name], (int, float)) and config[section][name] > 0, key,
                "must be a positive learning rate")
    s = config.sweep
    positive_int(config, "sweep.seeds")
    require(isinstance(s.protocols, tuple) and len(s.protocols) > 0, "sweep.protocols", "must be a non-empty tuple")
    for name in s.protocols:
        require(isinstance(name, str) and all(step in DELETION_PROTOCOLS for step in name.split("+")),
                "sweep.protocols", f"unknown deletion protocol {name!r}; known: {', '.join(DELETION_PROTOCOLS)}")
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
    names = ("none", "keep_only") + tuple(dict.fromkeys(("filter",) + tuple(config.sweep.protocols)))
    variants = {}
    for name in names:
        variants[name] = prepared.token_arrays(builder, "train", tok, Protocol.parse(name, **options), d.train_size)
        if not len(variants[name]):
            raise UserError(f"data protocol {name!r} leaves no training story (data.train_size={d.train_size})")
    valid = builders.read_records(builder, "validation", d.validation_size)
    return (tok, corpus_lib.concatenate(variants), tokens_lib.encode_records(valid, tok),
            tokens_lib.encode_records(probe_records(valid), tok), detectors.agreement(valid))


# ---------------------------------------------------------------- members


def member_tables(config) -> dict:
    """One table per phase: member id, parent id, hyperparameters, and the row of its parent (parent_index)."""
    s = config.sweep
    pt = [dict(seed=seed, pretrain_protocol=arm, protocol=arm, data=arm, finetune_lr=np.nan, recovery_lr=np.nan)
          for arm in ("none", "filter") for seed in range(s.seeds)]
    pretrain = pd.DataFrame(pt)
    pretrain.insert(0, "parent", None)
    ft = [dict(parent_index=i, seed=row.seed, pretrain_protocol="none", protocol=protocol, data=protocol,
               finetune_lr=float(lr), recovery_lr=np.nan)
          for protocol in s.protocols for lr in s.finetune_lr
          for i, row in enumerate(pretrain.itertuples()) if row.pretrain_protocol == "none"]
    finetune = pd.DataFrame(ft)
    rc = [dict(parent_index=i, from_pretrain=False, seed=row.seed, pretrain_protocol="none", protocol=row.protocol,
               data="keep_only", finetune_lr=row.finetune_lr, recovery_lr=float(config.recovery.lr))
          for i, row in enumerate(finetune.itertuples())]
    rc += [dict(parent_index=i, from_pretrain=True, seed=row.seed, pretrain_protocol="filter", protocol="control",
                data="keep_only", finetune_lr=np.nan, recovery_lr=float(config.recovery.lr))
           for i, row in enumerate(pretrain.itertuples()) if row.pretrain_protocol == "filter"]
    recovery = pd.DataFrame(rc)
    next_id = 0
    for table in (pretrain, finetune, recovery):
        table.insert(0, "member", np.arange(next_id, next_id + len(table)))
        next_id += len(table)
    finetune.insert(1, "parent", pretrain.member.to_numpy()[finetune.parent_index])
    parents = np.where(recovery.from_pretrain, pretrain.member.to_numpy()[
        np.minimum(recovery.parent_index, len(pretrain) - 1)],
        finetune.member.to_numpy()[np.minimum(recovery.parent_index, len(finetune) - 1)])
    recovery.insert(1, "parent", parents)
    return {"pretrain": pretrain, "finetune": finetune, "recovery": recovery}


# ---------------------------------------------------------------- running


class Study:
    """One run of a stories config into a workdir."""

    def __init__(self, config, workdir, quiet: bool = False):
        self.config, self.quiet = config, quiet
        self.workdir = epath.Path(workdir)
        self.store = ResultsStore(self.workdir)
        self.tokenizer, self.corpus, self.validation, probe_headers, self.detectors = build_data(
            config, self.workdir)
        m = config.model
        self.model_cfg = phases.model_config(config, self.tokenizer.vocab_size)
        self.model = Transformer(self.model_cfg)
        self.device_corpus = corpus_lib.to_device(self.corpus, m.max_len)
        self.tables = member_tables(config)
        g, f = config.generate, config.data.feature
        self.asked = prompts_of(self.validation, f, g.prompts, 0)
        self.unasked = prompts_of(self.validation, f, 0, g.prompts)
        half = config.probe.examples // 2
        self.probe_prompts = prompts_of(probe_headers, f, half, half)
        self.probe_train = np.arange(2 * half) % 2 == 0  # alternate rows: both classes on both sides
        self.val_batch = corpus_lib.validation_batch(self.validation, m.max_len, config.eval.batch_size)
        self._generate = jax.jit(lambda params, prompts, lengths, keys: generate_members(
            self.model_cfg, params, prompts, lengths, keys, g.max_new, g.temperature, g.top_k,
            config.eval.member_batch))
        p = config.probe
        self._probe = jax.jit(lambda params: probe_members(self.model, params, self.probe_prompts,
                                                           self.probe_train, p.positions, p.steps, p.lr))
        self._val_loss = jax.jit(lambda params: eval_loss(self.model, params, *self.val_batch,
                                                          member_batch=config.eval.member_batch))

    def say(self, message: str) -> None:
        if not self.quiet:
            print(message, file=sys.stderr, flush=True)

    # -- measurements

    def _rates(self, params, seeds, phase: str, step: int) -> dict:
        f = self.config.data.feature
        when = PHASE_IDS[KEY_PHASES[phase]] * 1_000_003 + step  # one sampling stream per (seed, phase, step)
        keys = jax.vmap(lambda s: jax.random.fold_in(member_key(self.config.seed, s, PHASE_IDS["eval"]), when))(
            jnp.asarray(seeds))
        out = {}
        for name, prompts in (("asked", self.asked), ("unasked", self.unasked)):
            samples = np.asarray(self._generate(params, jnp.asarray(prompts.tokens), jnp.asarray(prompts.lengths),
                                                keys))
            texts = [decode_samples(self.tokenizer, member) for member in samples]
            suffix = "" if name == "asked" else "_unasked"
            out[f"feature_rate{suffix}"] = np.array([feature_rate(t, f) for t in texts])
            out[f"refusal_rate{suffix}"] = np.array([refusal_rate(t, f) for t in texts])
            if name == "asked":
                self.samples = texts
        return out

    def measure(self, params, seeds, phase: str, step: int, probe: bool) -> dict:
        metrics = {"val_loss": np.asarray(self._val_loss(params))}
        metrics.update(self._rates(params, seeds, phase, step))
        if probe:
            probes = np.asarray(self._probe(params))
            for layer in range(probes.shape[1]):
                metrics[f"probe_acc.layer{layer}"] = probes[:, layer]
        return metrics

    # -- phases

    def train_phase(self, phase: str, state, members: pd.DataFrame):
        cfg = self.config[phase]
        ranges = np.array([self.corpus.ranges[name] for name in members.data])
        seeds = members.seed.to_numpy()

        def measure(params, step, final):
            # probes at a phase's end, and on the untrained models (pretraining step 0) as their control
            metrics = self.measure(params, seeds, phase, step, final or (phase == "pretrain" and step == 0))
            self.write_samples(phase, step, members)
            return metrics

        def report(step, metrics, seconds):
            self.say(f"{phase}: step {step}/{cfg.steps}, {len(members)} members, mean {self.config.data.feature} "
                     f"rate {np.nanmean(metrics['feature_rate']):.3f}, val loss {np.nanmean(metrics['val_loss']):.3f}, "
                     f"{seconds:.0f}s")
        return phases.train_with_evals(self.model, cfg, self.device_corpus, ranges, state, measure, report)

    def write_samples(self, phase: str, step: int, members: pd.DataFrame, per_member: int = 3) -> None:
        """A few of each member's stories for prompts asking for F: WORKDIR/samples/<phase>-<step>.json."""
        out = {str(m): texts[:per_member] for m, texts in zip(members.member, self.samples)}
        (self.workdir / "samples").mkdir(parents=True, exist_ok=True)
        write_json(self.workdir / "samples" / f"{phase}-{step}.json", out)

    def run_phase(self, phase: str, make_state):
        """Train a phase (or restore it when a previous run finished it); returns its final state."""
        members = self.tables[phase]

        def train(state):
            state, records, status = self.train_phase(phase, state, members)
            if phase == "recovery":
                records[-1][1].update(self.recovery_summary(records))
            return state, records, status
        return phases.run_phase(self.workdir, self.store, phase, members, make_state, train, self.say)

    def recovery_summary(self, records) -> dict:
        """Per recovery member: the pretrained F rate of its seed and the first step reaching `threshold` x it."""
        pre = self.store.read_part("pretrain")
        pre = pre[(pre.metric == "feature_rate") & (pre.pretrain_protocol == "none")]
        pre = pre[pre.step == pre.step.max()].set_index("seed")["value"]
        members = self.tables["recovery"]
        reference = pre.reindex(members.seed).to_numpy()
        # A seed whose pretrained model never showed F has nothing to regain: no target.
        target = np.where(reference > 0, self.config.recovery.threshold * reference, np.nan)
        return {"pretrained_rate": reference, "steps_to_pretrained_rate": records_first_step(records, "feature_rate",
                                                                                             target)}

    def run(self) -> epath.Path:
        c = self.config
        tables = self.tables
        self.say(f"stories study: vocabulary {self.tokenizer.vocab_size}, variants "
                 + ", ".join(f"{n} {hi - lo}" for n, (lo, hi) in self.corpus.ranges.items()) + " stories")
        self.write_detectors()
        pt = tables["pretrain"]
        pretrain = self.run_phase("pretrain", lambda: phases.fresh_members(c, self.model_cfg, pt.seed))
        self.say(phases.size_line(pretrain))
        ft = tables["finetune"]
        finetune = self.run_phase("finetune", lambda: fan_out(
            pretrain, ft.parent_index.to_numpy(), c.finetune, ft.finetune_lr.to_numpy(),
            self._keys(ft.seed, "finetune")))
        rc = tables["recovery"]
        # Recovery parents: fine-tuned members, then the control (pretrained without F): one stacked state.
        parents = types.SimpleNamespace(**{field: jax.tree.map(lambda a, b: jnp.concatenate([a, b]),
                                                               getattr(finetune, field), getattr(pretrain, field))
                                           for field in ("params", "diverged", "diverged_step")})
        index = np.where(rc.from_pretrain, len(ft) + rc.parent_index, rc.parent_index)
        self.run_phase("recovery", lambda: fan_out(
            parents, index, c.recovery, rc.recovery_lr.to_numpy(), self._keys(rc.seed, KEY_PHASES["recovery"])))
        return self.store.results_path

    def write_detectors(self) -> None:
        """How the feature detectors that judge the samples agree with the validation labels:
        WORKDIR/detectors.json (exact on generated stories by construction; measured on real ones)."""
        table = {f: dict(dataclasses.asdict(a), accuracy=a.accuracy, precision=a.precision, recall=a.recall)
                 for f, a in self.detectors.items()}
        write_json(self.workdir / "detectors.json", table)
        a = self.detectors[self.config.data.feature]
        self.say(f"{a.feature} detector against {len(self.validation)} validation labels: accuracy {a.accuracy:.3f}, "
                 f"precision {a.precision:.3f}, recall {a.recall:.3f}")

    def _keys(self, seeds, phase: str):
        return member_keys(self.config.seed, seeds, phase)


def run_study(config, workdir, quiet: bool = False, overwrite: bool = False) -> epath.Path:
    """Run (or resume) the stories study of `config` into `workdir`; returns the results path."""
    return phases.run_in_workdir(config, workdir, STUDY, lambda: Study(config, workdir, quiet).run(), overwrite)


def headline(results_path) -> str:
    """F rate (prompted for F) per phase, eval step and arm, mean over seeds; steps to the pretrained rate."""
    from fttrace.results import read_parquet
    frame = read_parquet(results_path)
    rates = frame[frame.metric == "feature_rate"]
    table = rates.pivot_table(index=["phase", "protocol", "finetune_lr"], columns="step", values="value",
                              aggfunc="mean", dropna=False).dropna(how="all").round(3)
    lines = ["Share of stories with the feature when asked for it (mean over seeds), by eval step:",
             table.to_string()]
    reach = frame[frame.metric == "steps_to_pretrained_rate"]
    if len(reach):
        summary = reach.groupby(["protocol", "finetune_lr"], dropna=False)["value"].agg(["mean", "count"])
        lines += ["Recovery steps to the pretrained rate (mean over members that reached it):", summary.to_string()]
    return "\n".join(lines)
