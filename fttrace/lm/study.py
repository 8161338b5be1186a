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
asks for F" (`measure.probe_records`: the request is stated only away from the probed positions). Recovery rows end with `steps_to_pretrained_rate`:
the first recovery eval step at which a member's F rate reaches `recovery.threshold` x the rate of the
pretrained (`none`) member of its seed, NaN if never.

Results: WORKDIR/results.parquet in the long format of `results.py` (member, parent, phase, step, metric, value,
status, then seed, pretrain_protocol, protocol, data, finetune_lr, recovery_lr). Each finished phase writes its
part and its members' final parameters (WORKDIR/checkpoints/<phase>.msgpack); a few sampled stories per member
and eval step go to WORKDIR/samples/<phase>-<step>.json. A rerun of the same config skips
finished phases (resume at phase granularity). One process; the member axis is not sharded.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import types

import flax.serialization
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from fttrace.checkpoint import run_fingerprint
from fttrace.errors import UserError
from fttrace.lm import corpus as corpus_lib
from fttrace.lm.decode import generate_members
from fttrace.lm.measure import (decode_samples, feature_rate, probe_members, probe_records, prompts_of,
                                 refusal_rate)
from fttrace.lm.steps import eval_loss, train_chunk
from fttrace.model import ModelConfig, Transformer
from fttrace.results import MANIFEST_FILE, ResultsStore, long_frame, manifest, write_json
from fttrace.stories import builders, detectors, prepared, tokens as tokens_lib
from fttrace.stories.protocols import STEPS, Protocol
from fttrace.stories.record import FEATURES
from fttrace.train import PHASE_IDS, fan_out, init_members, member_key, param_count

STUDY = "stories_twist"
PHASES = ("pretrain", "finetune", "recovery")
KEY_PHASES = {"pretrain": "pretrain", "finetune": "finetune", "recovery": "reft"}  # names in train.PHASE_IDS
DELETION_PROTOCOLS = tuple(s for s in STEPS if s not in ("none", "keep_only"))
HYPER_COLUMNS = ("seed", "pretrain_protocol", "protocol", "data", "finetune_lr", "recovery_lr")


# ---------------------------------------------------------------- config


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise UserError(f"config key {key!r}: {message}")


def _positive_int(value, key):
    _check(isinstance(value, int) and not isinstance(value, bool) and value > 0, key,
           f"must be a positive integer, got {value!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check a stories config; the error names the offending key."""
    for section in ("data", "model", "pretrain", "finetune", "recovery", "sweep", "generate", "probe", "eval"):
        _check(section in config, section, "missing section")
    d = config.data
    _check(d.get("dataset", "generated") in DATASETS, "data.dataset",
           f"unknown dataset {d.get('dataset')!r}; known: {', '.join(DATASETS)}")
    _check(d.feature in FEATURES, "data.feature", f"unknown feature {d.feature!r}; known: {', '.join(FEATURES)}")
    _check(d.source in FEATURES and d.source != d.feature, "data.source",
           f"must be a feature other than {d.feature}, got {d.source!r}")
    for key in ("train_size", "validation_size", "vocab_size"):
        _positive_int(d[key], f"data.{key}")
    m = config.model
    for key in ("d_model", "n_layers", "n_heads", "max_len"):
        _positive_int(m[key], f"model.{key}")
    _check(m.d_model % m.n_heads == 0, "model.n_heads", "must divide model.d_model")
    _check(m.get("dtype", "float32") == "float32", "model.dtype", "only float32 is supported by the LM decoder")
    for phase in PHASES:
        p = config[phase]
        for key in ("steps", "batch_size"):
            _positive_int(p[key], f"{phase}.{key}")
        _check(p.schedule in ("constant", "cosine"), f"{phase}.schedule", "must be 'constant' or 'cosine'")
        _check(0 <= p.warmup_steps <= p.steps, f"{phase}.warmup_steps", f"must be in [0, {p.steps}]")
        steps = tuple(p.eval_steps)
        _check(len(steps) >= 2 and steps[0] == 0 and steps[-1] == p.steps and all(
            isinstance(s, int) and a < s for a, s in zip(steps, steps[1:])), f"{phase}.eval_steps",
            f"must rise from 0 to {phase}.steps ({p.steps}), got {steps!r}")
    for key in ("pretrain.lr", "recovery.lr"):
        section, name = key.split(".")
        _check(isinstance(config[section][name], (int, float)) and config[section][name] > 0, key,
               "must be a positive learning rate")
    s = config.sweep
    _positive_int(s.seeds, "sweep.seeds")
    _check(isinstance(s.protocols, tuple) and len(s.protocols) > 0, "sweep.protocols", "must be a non-empty tuple")
    for name in s.protocols:
        _check(isinstance(name, str) and all(step in DELETION_PROTOCOLS for step in name.split("+")),
               "sweep.protocols", f"unknown deletion protocol {name!r}; known: {', '.join(DELETION_PROTOCOLS)}")
    _check(isinstance(s.finetune_lr, tuple) and len(s.finetune_lr) > 0 and all(
        isinstance(v, (int, float)) and v > 0 for v in s.finetune_lr), "sweep.finetune_lr",
        "must be a non-empty tuple of positive learning rates")
    g = config.generate
    _positive_int(g.prompts, "generate.prompts")
    _positive_int(g.max_new, "generate.max_new")
    _check(g.temperature > 0, "generate.temperature", "must be positive")
    _check(isinstance(g.top_k, int) and 0 <= g.top_k <= d.vocab_size, "generate.top_k",
           f"must be in [0, data.vocab_size], got {g.top_k!r}")
    for key in ("examples", "positions", "steps"):
        _positive_int(config.probe[key], f"probe.{key}")
    _positive_int(config.eval.batch_size, "eval.batch_size")
    for key in ("pretrain.member_batch", "finetune.member_batch", "recovery.member_batch", "eval.member_batch"):
        section, name = key.split(".")
        value = config[section].get(name, 0)
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, key,
               f"must be a non-negative integer (0: all members at once), got {value!r}")
    _check(0 < config.recovery.threshold <= 1, "recovery.threshold", "must be in (0, 1]")


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
        self.model_cfg = ModelConfig(vocab_size=self.tokenizer.vocab_size, max_len=m.max_len, d_model=m.d_model,
                                     n_layers=m.n_layers, n_heads=m.n_heads, d_mlp=m.get("d_mlp", 0))
        self.model = Transformer(self.model_cfg)
        self.device_corpus = corpus_lib.to_device(self.corpus, m.max_len)
        self.tables = member_tables(config)
        g, f = config.generate, config.data.feature
        self.asked = prompts_of(self.validation, f, g.prompts, 0)
        self.unasked = prompts_of(self.validation, f, 0, g.prompts)
        half = config.probe.examples // 2
        self.probe_prompts = prompts_of(probe_headers, f, half, half)
        self.probe_train = np.arange(2 * half) % 2 == 0  # alternate rows: both classes on both sides
        val = corpus_lib.DeviceCorpus(*[jnp.asarray(x, jnp.int32) for x in (
            np.concatenate([self.validation.tokens, np.zeros(m.max_len + 1, np.int32)]), self.validation.starts)])
        docs = jnp.arange(min(config.eval.batch_size, len(self.validation)))
        self.val_batch = corpus_lib.document_windows(val, docs, m.max_len)
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
        lo, hi = jnp.asarray(ranges[:, 0], jnp.int32), jnp.asarray(ranges[:, 1], jnp.int32)
        chunk = jax.jit(train_chunk(self.model, cfg), donate_argnums=0)
        seeds = members.seed.to_numpy()
        steps = tuple(cfg.eval_steps)
        records, done, t0 = [], 0, time.perf_counter()
        for target in steps:
            loss = np.full(len(members), np.nan)
            if target > done:
                state, loss = chunk(state, self.device_corpus, lo, hi, jnp.int32(target - done))
                loss = np.asarray(loss)
                done = target
            # probes at a phase's end, and on the untrained models (pretraining step 0) as their control
            probe = done == cfg.steps or (phase == "pretrain" and done == 0)
            metrics = {"train_loss": loss, **self.measure(state.params, seeds, phase, done, probe)}
            records.append((done, metrics))
            self.write_samples(phase, done, members)
            rate = np.nanmean(metrics["feature_rate"])
            self.say(f"{phase}: step {done}/{cfg.steps}, {len(members)} members, mean {self.config.data.feature} "
                     f"rate {rate:.3f}, val loss {np.nanmean(metrics['val_loss']):.3f}, "
                     f"{time.perf_counter() - t0:.0f}s")
        diverged_step = np.asarray(state.diverged_step)
        records[-1][1]["diverged_step"] = diverged_step.astype(np.float64)
        return state, records, np.where(diverged_step >= 0, "diverged", "ok")

    def write_samples(self, phase: str, step: int, members: pd.DataFrame, per_member: int = 3) -> None:
        """A few of each member's stories for prompts asking for F: WORKDIR/samples/<phase>-<step>.json."""
        out = {str(m): texts[:per_member] for m, texts in zip(members.member, self.samples)}
        (self.workdir / "samples").mkdir(parents=True, exist_ok=True)
        write_json(self.workdir / "samples" / f"{phase}-{step}.json", out)

    def run_phase(self, phase: str, make_state):
        """Train a phase (or restore it when a previous run finished it); returns its final state."""
        members = self.tables[phase]
        path = self.workdir / "checkpoints" / f"{phase}.msgpack"
        like = make_state()
        if self.store.has_part(phase) and path.exists():
            self.say(f"{phase}: finished in a previous run, restored")
            saved = flax.serialization.msgpack_restore(path.read_bytes())
            return like.replace(params=flax.serialization.from_state_dict(like.params, saved["params"]),
                                diverged=jnp.asarray(saved["diverged"]),
                                diverged_step=jnp.asarray(saved["diverged_step"]))
        state, records, status = self.train_phase(phase, like, members)
        if phase == "recovery":
            records[-1][1].update(self.recovery_summary(records))
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = flax.serialization.msgpack_serialize(dict(
            params=flax.serialization.to_state_dict(jax.device_get(state.params)),
            diverged=np.asarray(state.diverged), diverged_step=np.asarray(state.diverged_step)))
        tmp = path.parent / f".{path.name}.tmp"
        tmp.write_bytes(blob)
        tmp.replace(path)
        self.store.write_part(phase, long_frame(members.drop(columns=["from_pretrain"], errors="ignore"), phase,
                                                records, status))
        return state

    def recovery_summary(self, records) -> dict:
        """Per recovery member: the pretrained F rate of its seed and the first step reaching `threshold` x it."""
        pre = self.store.read_part("pretrain")
        pre = pre[(pre.metric == "feature_rate") & (pre.pretrain_protocol == "none")]
        pre = pre[pre.step == pre.step.max()].set_index("seed")["value"]
        members = self.tables["recovery"]
        reference = pre.reindex(members.seed).to_numpy()
        target = self.config.recovery.threshold * reference
        reached = np.full(len(members), np.nan)
        for step, metrics in reversed(records):  # a seed whose pretrained model never showed F has nothing to regain
            reached = np.where((metrics["feature_rate"] >= target) & (reference > 0), step, reached)
        return {"pretrained_rate": reference, "steps_to_pretrained_rate": reached}

    def run(self) -> epath.Path:
        c = self.config
        tables = self.tables
        self.say(f"stories study: vocabulary {self.tokenizer.vocab_size}, variants "
                 + ", ".join(f"{n} {hi - lo}" for n, (lo, hi) in self.corpus.ranges.items()) + " stories")
        self.write_detectors()
        pt = tables["pretrain"]
        pretrain = self.run_phase("pretrain", lambda: init_members(
            self.model_cfg, c.pretrain, c.seed, pt.seed.to_numpy(), np.full(len(pt), c.pretrain.lr)))
        self.say(f"model: {param_count(jax.tree.map(lambda x: x[0], pretrain.params)):,} parameters")
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
        return jax.vmap(lambda s: member_key(self.config.seed, s, PHASE_IDS[phase]))(
            jnp.asarray(np.asarray(seeds), jnp.int32))


def run_study(config, workdir, quiet: bool = False, overwrite: bool = False) -> epath.Path:
    """Run (or resume) the stories study of `config` into `workdir`; returns the results path."""
    workdir = epath.Path(workdir)
    store = ResultsStore(workdir)
    store.prepare()
    identity = run_fingerprint({"config": json.loads(json.dumps(config.to_dict(), default=str)), "study": STUDY})
    manifest_path = workdir / MANIFEST_FILE
    if manifest_path.exists() and not overwrite:
        previous = json.loads(manifest_path.read_text()).get("fingerprint")
        if previous != identity:
            raise UserError(f"workdir {workdir} holds a run of another config; choose another workdir or start "
                            "over with --overwrite")
    if overwrite:
        store.clear()
        checkpoints = workdir / "checkpoints"
        if checkpoints.exists():
            checkpoints.rmtree()
    store.remove_temporaries()
    started = time.time()
    devices = [str(d) for d in jax.devices()]
    write_json(manifest_path, manifest(config.to_dict(), devices, fingerprint=identity, status="running"))
    results = Study(config, workdir, quiet).run()
    write_json(manifest_path, manifest(config.to_dict(), devices, fingerprint=identity, status="done",
                                       wall_seconds=round(time.time() - started, 1)))
    return results


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
