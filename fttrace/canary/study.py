"""The canary study: does benign fine-tuning revive verbatim recall that suppression training hid?

Run tree (every phase is one jitted program over all its members, run by the engine, `runner.py`):

  pretrain   one member per seed on the ordinary text of every author with the canaries planted (`data.py`)
  suppress   each pretrained member fine-tuned so that canary prefixes are followed by the refusal sentence
             (plus ordinary text), at `suppress.lr`
  finetune   each suppressed member x unlock set (one author's fresh text, every author's, synthetic words) x
             unlock LR, at constant LR

At each of a phase's `eval_steps` every member continues every canary's and control's prefix greedily; per
(author, repetition count, length) cell the results hold `extraction/...` (share of canaries whose next k tokens
are reproduced exactly), `span/...` (mean longest reproduced span, tokens) and `refusal/...` (share answered with
the refusal sentence), see `extraction.py`; also the held-out LM loss, and at each phase's end linear probes per
layer for "this prefix is a canary" (prefixes of planted canaries vs those of controls of the same authors, at
several prefix lengths; held-out pairs never seen by the probe): `probe/layerL`, and `probe/layerL/rC` over the
held-out pairs of canaries planted C times.
Members of one seed share initialisation and data order, so cells are paired by seed.

Results: WORKDIR/results.parquet (long format: member, parent, phase, step, metric, value, status, then seed,
data, unlock_set, suppress_lr, unlock_lr); the tokenizer in WORKDIR/data/. As every study kind: orbax checkpoints
with mid-phase resume, the member axis sharded over every device, several processes, `--shard i/N` (whole seeds)
and `fttrace merge`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pandas as pd
from etils import epath

from fttrace.canary import authors as authors_lib, data as data_lib, extraction
from fttrace.config import finite_number, positive_int, require
from fttrace.lm.decode import generate_members
from fttrace.lm.measure import Prompts, probe_members
from fttrace.lm.phases import MODEL_SHAPES, LanguageModelStudy, check_model, check_phase, check_protocols, rows_of
from fttrace.engine.runner import PhaseRunner
from fttrace.lm.tokenizer import BOS, PAD

STUDY = "canary_unlock"
PHASES = ("pretrain", "suppress", "finetune")  # the last: benign fine-tuning, on an unlock set
KEY_PHASES = {"pretrain": "pretrain", "suppress": "finetune", "finetune": "reft"}  # a distinct train.PHASE_IDS each
UNLOCK_SETS = authors_lib.AUTHORS + ("mix", authors_lib.SYNTHETIC)


# ---------------------------------------------------------------- config


def _lr(value, key):
    require(finite_number(value) and value > 0, key, f"must be a positive finite learning rate, got {value!r}")


def _ints(values, key, minimum):
    require(isinstance(values, tuple) and len(values) > 0 and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in values), key,
        f"must be a non-empty tuple of integers >= {minimum}, got {values!r}")


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check a canary config; the error names the offending key."""
    for section in ("data", "canary", "model", *PHASES, "sweep", "probe", "eval"):
        require(section in config, section, "missing section")
    d = config.data
    require(isinstance(d.authors, tuple) and len(d.authors) > 0 and len(set(d.authors)) == len(d.authors) and all(
        a in authors_lib.AUTHORS for a in d.authors), "data.authors",
        f"must be distinct authors of {', '.join(authors_lib.AUTHORS)}, got {d.authors!r}")
    for key in ("train_size", "unlock_size", "validation_size", "vocab_size", "sentences", "synthetic_words"):
        positive_int(config, f"data.{key}")
    c = config.canary
    _ints(c.counts, "canary.counts", 1)
    require(len(set(c.counts)) == len(c.counts), "canary.counts", f"must be distinct, got {c.counts!r}")
    for key in ("per_cell", "prefix", "k"):
        positive_int(config, f"canary.{key}")
    _ints(c.lengths, "canary.lengths", c.prefix + c.k)
    check_model(config)
    require(config.model.max_len >= max(c.lengths) + 1, "model.max_len",
            f"must hold a canary and its BOS ({max(c.lengths) + 1} tokens), got {config.model.max_len}")
    for phase in PHASES:
        check_phase(config, phase)
    check_protocols(config, PHASES)
    _lr(config.pretrain.lr, "pretrain.lr")
    _lr(config.suppress.lr, "suppress.lr")
    require(isinstance(config.suppress.share, float) and 0 < config.suppress.share < 1, "suppress.share",
            f"must be a fraction in (0, 1), got {config.suppress.share!r}")
    s = config.sweep
    positive_int(config, "sweep.seeds")
    require(isinstance(s.unlock_sets, tuple) and len(s.unlock_sets) > 0 and all(
        u in UNLOCK_SETS and (u in ("mix", authors_lib.SYNTHETIC) or u in d.authors) for u in s.unlock_sets),
        "sweep.unlock_sets", f"must be a non-empty tuple of data.authors, 'mix' or 'synthetic', got {s.unlock_sets!r}")
    require(isinstance(s.unlock_lr, tuple) and len(s.unlock_lr) > 0, "sweep.unlock_lr",
            "must be a non-empty tuple of positive learning rates")
    for value in s.unlock_lr:
        _lr(value, "sweep.unlock_lr")
    for key in ("positions", "steps"):
        positive_int(config, f"probe.{key}")
    _ints(config.probe.prefix_lengths, "probe.prefix_lengths", 1)
    require(max(config.probe.prefix_lengths) <= min(c.lengths), "probe.prefix_lengths",
            f"must not exceed the shortest canary ({min(c.lengths)} tokens)")
    require(config.probe.positions <= min(config.probe.prefix_lengths) + 1, "probe.positions",
            "must be at most min(probe.prefix_lengths) + 1")
    require(isinstance(config.probe.lr, (int, float)) and config.probe.lr > 0, "probe.lr", "must be positive")


# ---------------------------------------------------------------- members


def member_tables(config) -> dict:
    """One table per phase: member id, parent id and hyperparameters. Ids number every seed's members, so a shard
    of the seeds names its members as the whole run does."""
    s = config.sweep
    nan = np.nan
    pretrain = pd.DataFrame([dict(seed=seed, data="pretrain", unlock_set="", suppress_lr=nan, unlock_lr=nan)
                             for seed in range(s.seeds)])
    pretrain.insert(0, "member", np.arange(len(pretrain)))
    pretrain.insert(1, "parent", None)
    suppress = pd.DataFrame([dict(parent=row.member, seed=row.seed, data="suppress", unlock_set="",
                                  suppress_lr=float(config.suppress.lr), unlock_lr=nan)
                             for row in pretrain.itertuples()])
    suppress.insert(0, "member", len(pretrain) + np.arange(len(suppress)))
    finetune = pd.DataFrame([dict(parent=row.member, seed=row.seed, data=f"unlock_{name}", unlock_set=name,
                                  suppress_lr=float(config.suppress.lr), unlock_lr=float(lr))
                             for name in s.unlock_sets for lr in s.unlock_lr for row in suppress.itertuples()])
    finetune.insert(0, "member", len(pretrain) + len(suppress) + np.arange(len(finetune)))
    return {"pretrain": pretrain, "suppress": suppress, "finetune": finetune}


# ---------------------------------------------------------------- measures


def probe_set(canaries, prefix_lengths):
    """Prompts for the "this prefix is a canary" probe: each planted canary and its paired control (the control of
    the same author and length at the same rank) cut to each of `prefix_lengths` tokens after BOS. Pairs alternate
    between the probe's training and held-out sides, so no canary is on both. Returns (Prompts, train mask, the
    planted count of each held-out prompt's pair)."""
    planted = [k for k in canaries if k.count > 0]
    controls = [k for k in canaries if k.count == 0]
    rows, pair, count = [], [], []
    for i, (canary, control) in enumerate(zip(planted, controls)):
        for length in prefix_lengths:
            for k in (canary, control):
                rows.append((k.tokens[:length], k.count > 0))
                pair.append(i)
                count.append(canary.count)
    width = max(prefix_lengths) + 1
    tokens = np.full((len(rows), width), PAD, np.int32)
    for r, (t, _) in enumerate(rows):
        tokens[r, :len(t) + 1] = [BOS, *t]
    lengths = np.asarray([len(t) + 1 for t, _ in rows], np.int32)
    train = np.asarray(pair) % 2 == 0
    return (Prompts(tokens, lengths, np.asarray([y for _, y in rows])), train, np.asarray(count)[~train])


def count_probe_set(canaries, prefix_lengths):
    """Prompts for the "how often was this canary planted" probe: each planted canary cut to each of `prefix_lengths`
    tokens after BOS, labelled planted at least the median of the planted counts (the often-seen half) or less; its
    control target, on the same prompts: an arbitrary balanced label per canary (fixed, seeded), which nothing in a
    held-out canary predicts. Canaries alternate between the training and held-out sides (every prefix of a canary
    on one side). Returns (Prompts, train mask, the control labels)."""
    planted = [k for k in canaries if k.count > 0]
    counts = np.array([k.count for k in planted])
    often = counts >= np.median(np.unique(counts))
    arbitrary = np.random.default_rng(0).permutation(np.arange(len(planted)) % 2 == 0)
    rows = [(k.tokens[:length], i) for i, k in enumerate(planted) for length in prefix_lengths]
    tokens = np.full((len(rows), max(prefix_lengths) + 1), PAD, np.int32)
    for r, (t, _) in enumerate(rows):
        tokens[r, :len(t) + 1] = [BOS, *t]
    lengths = np.asarray([len(t) + 1 for t, _ in rows], np.int32)
    index = np.asarray([i for _, i in rows])
    return Prompts(tokens, lengths, often[index]), index % 2 == 0, arbitrary[index]


# ---------------------------------------------------------------- running


class CanaryStudy(LanguageModelStudy):
    """The canary study kind (runner.py)."""

    PHASES = PHASES
    KEY_PHASES = KEY_PHASES
    FRESH = ("data",)  # the tokenizer, trained on the config's text

    def member_tables(self) -> dict:
        return member_tables(self.config)

    def tokenizer_path(self, workdir):
        """Where the study's tokenizer is (fttrace.open's vocabulary)."""
        return data_lib.tokenizer_path(self.config, epath.Path(workdir) / "data")

    def prepare(self, workdir, placement) -> dict:
        config = self.config
        c = config.canary
        self.data = data_lib.build(config, epath.Path(workdir) / "data")
        self.corpus, self.validation = self.data.corpus, self.data.validation
        self.vocab_size = self.data.tokenizer.vocab_size
        self.shared = self.shared_inputs(placement)
        canaries = self.data.canaries
        self.prompts = np.asarray([[BOS, *k.tokens[:c.prefix]] for k in canaries], np.int32)
        width = max(c.lengths) - c.prefix
        self.targets = np.full((len(canaries), width), PAD, np.int32)
        for row, k in enumerate(canaries):
            self.targets[row, :k.length - c.prefix] = k.tokens[c.prefix:]
        self.target_lengths = np.asarray([k.length - c.prefix for k in canaries])
        self.probe_prompts, self.probe_train, self.probe_counts = probe_set(canaries, config.probe.prefix_lengths)
        self.count_probe = count_probe_set(canaries, config.probe.prefix_lengths)
        return dict(study=STUDY, vocab_size=self.data.tokenizer.vocab_size,
                    canaries=int(sum(k.count > 0 for k in canaries)),
                    documents={n: hi - lo for n, (lo, hi) in self.corpus.ranges.items()})

    def build_measures(self) -> None:
        """Greedy continuations of the canary prefixes and the probes, jitted for the current model
        (phases.LanguageModelStudy.use_group)."""
        config, cfg, model = self.config, self.model_cfg, self.model
        c, p = config.canary, config.probe
        width = max(c.lengths) - c.prefix
        self._generate = jax.jit(lambda params, keys: generate_members(
            cfg, params, jnp.asarray(self.prompts), jnp.full(len(self.prompts), c.prefix + 1), keys, width, 0.0, 0,
            config.eval.member_batch))
        self._probe = jax.jit(lambda params: probe_members(model, params, self.probe_prompts, self.probe_train,
                                                           p.positions, p.steps, p.lr, per_example=True))
        prompts, train, control = self.count_probe
        targets = np.stack([prompts.asks, control])  # planted often, then the control target
        self._count_probe = jax.jit(lambda params: probe_members(model, params, prompts, train, p.positions, p.steps,
                                                                 p.lr, targets=targets))

    def measure(self, runner: PhaseRunner, phase: str, members: pd.DataFrame):
        """measure(state, step, final, records) of one phase: greedy continuations of every canary prefix scored per
        cell; at the phase's end, the probes."""
        planted = [cell for cell in self._cells() if cell[1] > 0]

        def at(state, step, final, records):
            keys = jnp.zeros((jax.tree.leaves(state.params)[0].shape[0], 2), jnp.uint32)  # greedy: keys unused
            probing = final or (phase == "pretrain" and step == 0)  # (the untrained models: the probes' null)
            sets = 1 + 2 * probing  # the continuations, and the two probes
            runner.progress.expect(sets, sets * len(members))
            generated = runner.local(self._generate(state.params, keys), members)
            runner.progress.done(len(members))
            per_canary = {
                "extraction": extraction.extracted(generated, self.targets, self.target_lengths, self.config.canary.k),
                "span": extraction.longest_span(generated, self.targets, self.target_lengths),
                "refusal": extraction.refused(generated, self.data.refusal)}
            out = extraction.cell_means(per_canary, self.data.canaries)
            out.update(extraction.memorisation_gap(per_canary["extraction"], self.data.canaries))
            if probing:
                correct = runner.local(self._probe(state.params), members).astype(np.float64)  # [M, L+1, prompts]
                runner.progress.done(len(members))
                often = runner.local(self._count_probe(state.params), members)  # [M, (often, control), L+1]
                runner.progress.done(len(members))
                for layer in range(correct.shape[1]):
                    out[f"probe_count/layer{layer}"] = often[:, 0, layer]
                    out[f"probe_count_control/layer{layer}"] = often[:, 1, layer]
                    out[f"probe/layer{layer}"] = correct[:, layer].mean(-1)
                    for count in sorted(set(self.probe_counts)):
                        rows = self.probe_counts == count
                        out[f"probe/layer{layer}/r{count}"] = correct[:, layer][:, rows].mean(-1)
            mean = {kind: np.mean([np.nanmean(out[extraction.cell_name(kind, *cell)]) for cell in planted])
                    for kind in ("extraction", "refusal")}
            runner.progress.say(f"group {runner.index} {phase}: step {step}/{self.config[phase].steps}, mean "
                                f"extraction {mean['extraction']:.3f}, refusal {mean['refusal']:.3f}")
            return out
        return at

    def _cells(self):
        return list(dict.fromkeys((k.author, k.count, k.length) for k in self.data.canaries))

    def run_group(self, runner: PhaseRunner, group) -> None:
        self.use_group(group)
        t = group.tables
        runner.progress.say(f"canary study: vocabulary {self.data.tokenizer.vocab_size}, "
                            f"{sum(k.count > 0 for k in self.data.canaries)} canaries, documents "
                            + ", ".join(f"{n} {hi - lo}" for n, (lo, hi) in self.corpus.ranges.items()))
        pt, sp, ft = t["pretrain"], t["suppress"], t["finetune"]
        pretrain = self.train(runner, group, "pretrain", None, None, None, self.measure(runner, "pretrain", pt))
        runner.progress.say(self.size_line(pretrain))
        if runner.store.writes_results:
            for line in extraction.regime_lines(runner.store.read_part(runner.part_name("pretrain"))):
                runner.progress.say(line)
        suppress = self.train(runner, group, "suppress", pretrain, rows_of(pt, sp), sp.suppress_lr,
                              self.measure(runner, "suppress", sp))
        self.train(runner, group, "finetune", suppress, rows_of(sp, ft), ft.unlock_lr,
                   self.measure(runner, "finetune", ft))

    @staticmethod
    def final_lines(results_path) -> str:
        return final_lines(results_path)


KIND = CanaryStudy


def final_lines(results_path) -> str:
    """Extraction of planted canaries per phase, unlock set, LR and eval step (mean over seeds and authors), by
    repetition count; the controls' extraction as the chance baseline."""
    from fttrace.engine.results import read_parquet
    frame = read_parquet(results_path)
    cells = frame.metric.map(extraction.parse_cell)
    rows = frame[cells.notna()].copy()
    parsed = pd.DataFrame(cells[cells.notna()].tolist(), index=rows.index,
                          columns=["kind", "author", "count", "length"])
    rows = rows.join(parsed)
    rows = rows[rows.kind == "extraction"]
    shapes = [c for c in MODEL_SHAPES if c in rows]  # (a sweep of model shapes: one block per shape)
    table = rows.pivot_table(index=[*shapes, "phase", "unlock_set", "unlock_lr", "step"], columns="count",
                             values="value", aggfunc="mean", dropna=False).dropna(how="all").round(3)
    table.columns = [f"r{c}" if c else "control" for c in table.columns]
    order = {p: i for i, p in enumerate(PHASES)}
    table = table.sort_index(key=lambda index: index.map(order) if index.name == "phase" else index)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        return "\n".join(extraction.regime_lines(frame) + [
            "Verbatim extraction of canaries by repetition count (mean over seeds and authors), by eval step:",
            table.to_string()])
