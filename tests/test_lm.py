"""Story language models: document sampling, LM loss, training, cached sampling, feature rates, the study via CLI."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from fttrace import cli
from fttrace import config as config_lib
from fttrace.lm import corpus as corpus_lib
from fttrace.lm.decode import generate, generate_members, step_logits, empty_cache
from fttrace.errors import UserError
from analysis.schema import beyond_noise
from fttrace.lm.measure import decode_samples, probe_accuracy, probe_members, proportion_gap
from fttrace.stories.measure import feature_rate, probe_records, refusal_rate, story_probe_set
from fttrace.lm.steps import DocumentRange, NextTokenObjective, lm_loss
from fttrace.model.transformer import ModelConfig, Transformer, init_params
from fttrace.lm import tokenizer as tokenizer_lib, tokens as lm_tokens
from fttrace.stories import detectors, generator, record, tokens as tokens_lib
from fttrace.stories.variants import refusal_sentence
from fttrace.stories.record import FEATURES
from fttrace.lm.tokenizer import BOS, EOS, PAD
from fttrace.engine.train import DataSpec, init_members, train_steps
from helpers import ROOT, assert_config_error, assert_opens_every_member

CONFIG = str(ROOT / "configs" / "stories_twist.py")


def synthetic_arrays(lengths, first_value):
    """Documents [BOS, v, v, ..., EOS] with v = first_value + document index."""
    docs = [np.asarray([BOS] + [first_value + i] * (n - 2) + [EOS], np.int32) for i, n in enumerate(lengths)]
    count = len(docs)
    return lm_tokens.TokenArrays(
        tokens=np.concatenate(docs), starts=np.concatenate([[0], np.cumsum([len(d) for d in docs])]),
        story_starts=np.ones(count, np.int32), features=np.zeros((count, 6), np.uint8),
        labels=np.zeros((count, 6), np.uint8))


def eval_loss(cfg, params, inputs, targets, weights):
    """Every member's held-out loss as the phase loop evaluates it."""
    shared = dict(validation=(inputs, targets, weights))
    return jax.vmap(lambda p: NextTokenObjective.evaluate(Transformer(cfg), p, shared)["val_loss"])(params)


def lm_chunk(cfg, phase, member_batch=None):
    """The engine's training chunk with the every-position objective: (state, corpus, lo, hi, steps)."""
    run = jax.jit(train_steps(Transformer(cfg), NextTokenObjective(cfg.max_len), phase, member_batch))
    return lambda state, corpus, lo, hi, steps: run(state, DataSpec(batch=DocumentRange(lo=lo, hi=hi)),
                                                    dict(corpus=corpus), jnp.int32(steps)), run


def test_windows_stay_in_their_documents_and_variant_and_repeat_per_key():
    a = synthetic_arrays([5, 9, 3, 12], 100)
    b = synthetic_arrays([7, 4, 20, 6, 8], 200)
    corpus = corpus_lib.concatenate({"a": a, "b": b})
    assert corpus.ranges == {"a": (0, 4), "b": (4, 9)}
    np.testing.assert_array_equal(corpus.variant("b").tokens, b.tokens)
    length = 10
    dev = corpus_lib.to_device(corpus, length)
    lo, hi = corpus.ranges["b"]
    inputs, targets, weights = map(np.asarray, corpus_lib.sample_windows(jax.random.PRNGKey(3), dev, lo, hi, 64,
                                                                         length))
    assert inputs.shape == targets.shape == weights.shape == (64, length)
    assert (inputs[:, 0] == BOS).all()
    doc = inputs[:, 1] - 200
    assert ((doc >= 0) & (doc < 5)).all() and len(set(doc)) == 5
    for row in range(64):
        n = len(b.document(doc[row]))
        full = np.concatenate([b.document(doc[row]), np.full(length + 1, PAD)])[:length + 1]
        np.testing.assert_array_equal(inputs[row], full[:-1])
        np.testing.assert_array_equal(targets[row], full[1:])
        assert weights[row].sum() == min(n - 1, length)  # the loss never reaches past the document's EOS
        assert (targets[row][weights[row] == 0] == PAD).all()
    again = corpus_lib.sample_windows(jax.random.PRNGKey(3), dev, lo, hi, 64, length)
    other = corpus_lib.sample_windows(jax.random.PRNGKey(4), dev, lo, hi, 64, length)
    np.testing.assert_array_equal(inputs, again[0])
    assert not np.array_equal(inputs, other[0])


def small_model(vocab=40, max_len=24, layer_norm=True, dtype="float32"):
    cfg = ModelConfig(vocab_size=vocab, max_len=max_len, d_model=16, n_layers=2, n_heads=2, d_mlp=32,
                      layer_norm=layer_norm, dtype=dtype)
    return cfg, init_params(cfg, jax.random.PRNGKey(0))


def test_lm_loss_equals_a_hand_computation():
    cfg, params = small_model()
    rng = np.random.default_rng(0)
    inputs = rng.integers(0, cfg.vocab_size, (3, cfg.max_len)).astype(np.int32)
    targets = rng.integers(0, cfg.vocab_size, (3, cfg.max_len)).astype(np.int32)
    weights = (rng.random((3, cfg.max_len)) < 0.6).astype(np.float32)
    logits = np.asarray(Transformer(cfg).apply({"params": params}, inputs), np.float64)
    logp = logits - logits.max(-1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    hand = -(picked * weights).sum() / weights.sum()
    got = float(lm_loss(Transformer(cfg), params, inputs, targets, weights))
    assert got == pytest.approx(hand, rel=1e-5)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), params)
    np.testing.assert_allclose(eval_loss(cfg, stacked, inputs, targets, weights), [hand, hand],
                               rtol=1e-5)


@functools.lru_cache(maxsize=1)
def story_data():
    records = generator.generate_records(200, seed=1)
    tok = tokenizer_lib.train_tokenizer((record.render_text(r) for r in records), 256)
    return records, tok, tokens_lib.encode_records(records, tok)


def phase_cfg(steps, batch_size=4, lr=3e-3):
    return config_lib.ml_collections.ConfigDict(dict(
        steps=steps, batch_size=batch_size, lr=lr, schedule="constant", warmup_steps=0, b1=0.9, b2=0.95,
        weight_decay=0.1, grad_clip=1.0))


def test_pretraining_lowers_the_loss_of_every_member():
    _, tok, arrays = story_data()
    corpus = corpus_lib.concatenate({"all": arrays})
    cfg = ModelConfig(vocab_size=tok.vocab_size, max_len=128, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    dev = corpus_lib.to_device(corpus, cfg.max_len)
    phase = phase_cfg(60, lr=1e-2)
    state = init_members(cfg, phase, 0, [0, 1], [1e-2, 1e-2])
    held_out = corpus_lib.document_windows(dev, jnp.arange(150, 200), cfg.max_len)
    before = np.asarray(eval_loss(cfg, state.params, *held_out))
    lo, hi = jnp.zeros(2, jnp.int32), jnp.full(2, 150, jnp.int32)
    state, train_loss = lm_chunk(cfg, phase)[0](state, dev, lo, hi, 60)
    after = np.asarray(eval_loss(cfg, state.params, *held_out))
    assert np.isfinite(train_loss).all()
    assert (after < before - 1.0).all(), (before, after)  # from ~ln(256) = 5.5 nats towards the unigram level


def test_sweep_of_eight_members_is_one_program_and_each_member_trains_as_alone():
    _, tok, arrays = story_data()
    corpus = corpus_lib.concatenate({"a": arrays, "b": arrays})
    cfg = ModelConfig(vocab_size=tok.vocab_size, max_len=32, d_model=16, n_layers=1, n_heads=2, d_mlp=32)
    dev = corpus_lib.to_device(corpus, cfg.max_len)
    phase = phase_cfg(6)
    seeds = np.arange(8) % 4
    lrs = np.where(np.arange(8) < 4, 3e-3, 3e-4)
    ranges = np.array([corpus.ranges["a" if i % 2 else "b"] for i in range(8)])
    lo, hi = jnp.asarray(ranges[:, 0], jnp.int32), jnp.asarray(ranges[:, 1], jnp.int32)
    chunk, program = lm_chunk(cfg, phase)
    state = init_members(cfg, phase, 0, seeds, lrs)
    swept, _ = chunk(state, dev, lo, hi, 2)
    swept, _ = chunk(swept, dev, lo, hi, 4)  # another length: same program
    assert program._cache_size() == 1
    one = jax.tree.map(lambda x: x[5:6], state)
    alone, _ = lm_chunk(cfg, phase)[0](one, dev, lo[5:6], hi[5:6], 6)
    for a, b in zip(jax.tree.leaves(alone.params), jax.tree.leaves(swept.params)):
        np.testing.assert_allclose(a[0], b[5], rtol=2e-5, atol=2e-6)
    assert not np.allclose(jax.tree.leaves(swept.params)[0][4], jax.tree.leaves(swept.params)[0][5])
    grouped, _ = lm_chunk(cfg, phase, member_batch=4)[0](state, dev, lo, hi, 6)  # two member batches of four: same numbers
    for a, b in zip(jax.tree.leaves(grouped.params), jax.tree.leaves(swept.params)):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("layer_norm,dtype", [(True, "float32"), (False, "float32"), (True, "bfloat16"),
                                              (False, "bfloat16")])
def test_cached_step_logits_equal_the_full_forward_pass(layer_norm, dtype):
    """In float32 to float rounding; in bfloat16 compute (cache in bfloat16, logits float32) to bfloat16's."""
    cfg, params = small_model(layer_norm=layer_norm, dtype=dtype)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (3, cfg.max_len), 0, cfg.vocab_size)
    full = Transformer(cfg).apply({"params": params}, tokens)
    cache = empty_cache(cfg, 3)
    assert cache["k"][0].dtype == jnp.dtype(dtype)
    tolerance = 1e-4 if dtype == "float32" else 2e-2
    for t in range(cfg.max_len):
        logits, cache = step_logits(cfg, params, tokens[:, t], t, cache)
        assert logits.dtype == jnp.float32
        np.testing.assert_allclose(logits, full[:, t], rtol=tolerance, atol=tolerance)


def greedy_by_full_forward(cfg, params, prompt, max_new):
    """Independent greedy decoding: the full forward pass on the growing sequence, one row."""
    seq = list(prompt)
    out = []
    while len(out) < max_new and len(seq) < cfg.max_len:
        logits = Transformer(cfg).apply({"params": params}, jnp.asarray([seq]))[0, -1]
        token = int(jnp.argmax(logits))
        out.append(token)
        seq.append(token)
        if token == EOS:
            break
    return out + [PAD] * (max_new - len(out))


@pytest.mark.slow
def test_generation_top1_is_greedy_deterministic_per_key_and_stops_at_max_length():
    cfg, params = small_model()
    prompts = np.array([[BOS, 7, 8, 9, 10], [BOS, 11, 12, PAD, PAD], [BOS, 5, PAD, PAD, PAD]], np.int32)
    lengths = np.array([5, 3, 2], np.int32)
    key = jax.random.PRNGKey(0)
    greedy = np.asarray(generate(cfg, params, prompts, lengths, key, 8, temperature=0.7, top_k=1))
    for row in range(3):
        assert list(greedy[row]) == greedy_by_full_forward(cfg, params, prompts[row, :lengths[row]], 8)
    sample = lambda k, n=8: np.asarray(generate(cfg, params, prompts, lengths, k, n, 1.0, 0))  # noqa: E731
    np.testing.assert_array_equal(sample(key), sample(key))
    assert not np.array_equal(sample(key), sample(jax.random.PRNGKey(1)))
    long = sample(key, 30)  # context 24: a row can generate only up to position 23
    assert long.shape == (3, 30)
    for row in range(3):
        room = cfg.max_len - lengths[row]
        assert (long[row, room:] == PAD).all()
        assert (long[row, :room] != PAD).any()
    # every member at once equals each member alone
    stacked = jax.tree.map(lambda x: jnp.stack([x, x * 1.5]), params)
    keys = jnp.stack([key, jax.random.PRNGKey(9)])
    both = np.asarray(generate_members(cfg, stacked, prompts, lengths, keys, 8, 1.0, 0))
    np.testing.assert_array_equal(both[0], sample(key))
    one_at_a_time = generate_members(cfg, stacked, prompts, lengths, keys, 8, 1.0, 0, member_batch=1)
    np.testing.assert_array_equal(one_at_a_time, both)


def test_windowed_attention_samples_what_reading_the_whole_cache_samples():
    """Attention over the positions so far rounded up to a window gives the samples of attention over every
    position, at every window width, sampled and greedy, for every member."""
    cfg, params = small_model()
    prompts = np.array([[BOS, 7, 8, 9, 10], [BOS, 11, 12, PAD, PAD], [BOS, 5, PAD, PAD, PAD]], np.int32)
    lengths = np.array([5, 3, 2], np.int32)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x * 1.5]), params)
    keys = jnp.stack([jax.random.PRNGKey(3), jax.random.PRNGKey(4)])
    decode = jax.jit(lambda temperature, window: generate_members(cfg, stacked, prompts, lengths, keys, 30,
                                                                  temperature, 0, window=window), static_argnums=(0, 1))
    for temperature in (1.0, 0.0):
        whole = np.asarray(decode(temperature, cfg.max_len))
        assert (whole != PAD).sum() > 30  # rows write most of the context: every window is crossed
        np.testing.assert_array_equal(decode(temperature, 5), whole)


def test_generation_stops_after_eos():
    cfg, params = small_model()
    params = jax.tree.map(lambda x: x, params)
    bias = jnp.linspace(-1, 1, cfg.d_model)
    params["ln_f"] = {"scale": jnp.zeros(cfg.d_model), "bias": bias}  # every position reads the same vector ...
    params["unembed"] = {"kernel": jnp.zeros((cfg.d_model, cfg.vocab_size)).at[:, EOS].set(bias * 10)}  # ... EOS
    prompts = np.array([[BOS, 7, 8]], np.int32)
    out = np.asarray(generate(cfg, params, prompts, np.array([3]), jax.random.PRNGKey(0), 6, 1.0, 0))
    assert list(out[0]) == [EOS] + [PAD] * 5


def test_feature_rate_equals_the_detector_on_decoded_text():
    records, tok, _ = story_data()
    stories = [r.story for r in records[:12]]
    stories.append(refusal_sentence("Twist"))
    rows = [tok.encode(" " + s) + [EOS] for s in stories]
    samples = np.full((len(rows), max(map(len, rows)) + 3), PAD, np.int32)
    for i, row in enumerate(rows):
        samples[i, :len(row)] = row
    texts = decode_samples(tok, samples[None])
    assert [t.strip() for t in texts] == stories
    expected = detectors.shares(stories)["Twist"]
    assert feature_rate(texts, "Twist") == expected
    assert expected == sum(r.has("Twist") for r in records[:12]) / 13
    assert 0 < expected < 1
    assert refusal_rate(texts, "Twist") == pytest.approx(1 / 13)


def test_probe_reads_a_linear_signal_and_not_shuffled_labels():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 8)).astype(np.float32)
    y = (x[:, 2] - 0.5 * x[:, 5] > 0).astype(np.float32)
    acc = float(probe_accuracy(x[:200], y[:200], x[200:], y[200:], 200, 0.05))
    shuffled = float(probe_accuracy(x[:200], rng.permutation(y[:200]), x[200:], y[200:], 200, 0.05))
    assert acc > 0.95 and shuffled < 0.7


def test_story_probe_reads_the_feature_from_a_model_that_carries_it_and_not_from_one_that_does_not():
    """The story-text probe (header stripped) with its control target: at chance on a model whose residual stream is
    blind to the text (no embeddings), high on one built to carry Twist (the pieces only stories with Twist contain,
    embedded along one direction, read over the whole story)."""
    records, tok, _ = story_data()
    prompts, control = story_probe_set(records, tok, "Twist", 80, 240, "probe.examples")
    assert prompts.asks[:40].all() and not prompts.asks[40:].any() and (prompts.tokens[:, 0] == BOS).all()
    assert 0.3 < control.mean() < 0.7  # the control target is balanced too
    cfg = ModelConfig(vocab_size=tok.vocab_size, max_len=240, d_model=32, n_layers=1, n_heads=2, d_mlp=32)
    blind = init_params(cfg, jax.random.PRNGKey(0))
    blind = dict(blind, embed={"embedding": jnp.zeros_like(blind["embed"]["embedding"])},
                 pos_embed=jnp.zeros_like(blind["pos_embed"]))
    pieces = [set(row[:n].tolist()) for row, n in zip(prompts.tokens, prompts.lengths)]
    twist_only = set().union(*pieces[:40]) - set().union(*pieces[40:])  # pieces only stories with Twist contain
    assert twist_only
    embedding = blind["embed"]["embedding"].at[jnp.array(sorted(twist_only)), 0].set(1.0)
    carries = dict(blind, embed={"embedding": embedding})
    params = jax.tree.map(lambda a, b: jnp.stack([a, b]), carries, blind)
    train = np.arange(80) % 2 == 0
    acc = np.asarray(probe_members(Transformer(cfg), params, prompts, train, 240, 200, 0.05,
                                   targets=np.stack([prompts.asks, control])))  # [member, target, layer]
    assert acc.shape == (2, 2, 2)
    assert acc[0, 0, 0] >= 0.9, acc  # read from the embeddings of Twist's words
    held_out = control[~train].mean()
    assert acc[1, 0, 0] == 0.5 and acc[1, 1, 0] in (pytest.approx(held_out), pytest.approx(1 - held_out))  # chance
    with pytest.raises(UserError, match="config key 'probe.examples': asks for 150 stories with Twist"):
        story_probe_set(records, tok, "Twist", 300, 240, "probe.examples")


def test_probe_headers_state_the_request_only_in_the_features_line():
    records = generator.generate_records(300, seed=0)
    probed = probe_records(records)
    assert len(probed) == sum(1 for r in records if r.features) > 0
    tails = {True: set(), False: set()}
    for r in probed:
        header = record.render_header(r)
        assert header.startswith("Features: ") and "Summary:" not in header
        rest = header.split("\n", 1)[1]  # what follows the Features line: the words and `Story: `
        assert rest.startswith("Words: ") and rest.endswith("\nStory: ") and rest.count("\n") == 1
        tails[r.asks("Twist")].add(rest)
    assert tails[True] and tails[False]
    with_summary = [r for r in records if r.asks("Twist") and r.features]
    assert any("surprise" in r.summary or "not what it seems" in r.summary for r in with_summary)


@pytest.mark.slow
def test_tiny_study_runs_through_the_cli_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "run"
    # deletion to a criterion: a tiny model never writes F, so every deletion member stops at its first evaluation
    stop = "--config.finetune.stop_below=0.5"
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(workdir), "-q", stop]) == 0
    printed = capsys.readouterr()  # -q: the results path only, no dataset builder's lines
    assert printed.out.strip().splitlines() == [f"results: {workdir / 'results.parquet'}"] and not printed.err
    frame = pd.read_parquet(workdir / "results.parquet")
    assert set(frame.phase) == {"pretrain", "finetune", "recovery"}
    members = frame.groupby("phase").member.nunique().to_dict()
    assert members == {"pretrain": 2, "finetune": 4, "recovery": 6}  # 1 seed; 4 deletions x 1 LR; + control x 2 LRs
    for metric in ("feature_rate", "feature_rate_unasked", "refusal_rate", "val_loss", "train_loss",
                   "probe_acc.layer0", "probe_acc.layer1", "feature_gap", "feature_gap_se", "feature_samples",
                   "other_rate.Dialogue", "val_loss.without_feature"):
        assert metric in set(frame.metric), metric
    losses = frame[frame.metric.str.startswith("val_loss")].pivot_table(index=["member", "step"], columns="metric",
                                                                        values="value")
    assert (losses["val_loss"] != losses["val_loss.without_feature"]).all()  # stories without Twist only
    assert (frame[frame.metric == "feature_samples"].value == 4).all()  # generate.prompts of the tiny form
    ft = frame[frame.phase == "finetune"]
    assert (ft[ft.metric == "stop_step"].value == 0).all()
    loss = ft[ft.metric == "val_loss"].pivot_table(index="member", columns="step", values="value")
    assert (loss.nunique(axis=1) == 1).all()  # frozen from step 0 on
    assert ft[(ft.metric == "train_loss") & (ft.step > 0)].value.isna().all()
    probed = frame[frame.metric == "probe_acc.layer1"].groupby("phase").step.unique()
    assert {phase: sorted(steps) for phase, steps in probed.items()} == {
        "pretrain": [0, 20], "finetune": [4], "recovery": [6]}  # the untrained models are the probes' control
    rec = frame[frame.phase == "recovery"]
    assert set(rec.step) == {0, 2, 6}
    assert set(rec[rec.metric == "steps_to_pretrained_rate"].step) == {6}
    assert set(rec.deletion) == {"filter", "filter_label", "mix_match", "refusal", "control", "control x10"}
    lrs = rec.groupby("deletion").recovery_lr.first()
    assert lrs["control x10"] == pytest.approx(10 * lrs["control"]) and lrs["filter"] == lrs["control"]
    assert_opens_every_member(workdir, frame, unchanged=set(ft.member))
    pt_ids = set(frame[frame.phase == "pretrain"].member)
    assert set(ft.parent.astype(int)) <= pt_ids
    control = rec[rec.deletion.str.startswith("control")]
    assert (frame[frame.member.isin(control.parent.astype(int))].pretrain_data == "filter").all()
    assert {"seed", "finetune_lr", "recovery_lr", "status"} <= set(frame.columns)
    detected = json.loads((workdir / "detectors.json").read_text())
    assert detected["Twist"]["accuracy"] == 1.0 and detected["Twist"]["false_neg"] == 0  # exact by construction
    samples = json.loads((workdir / "samples" / "recovery-6.json").read_text())
    assert sorted(samples, key=int) == [str(m) for m in sorted(set(rec.member))]
    first = (workdir / "results.parquet").read_bytes()
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(workdir), "-q", stop]) == 0  # resume: all done
    assert (workdir / "results.parquet").read_bytes() == first
    capsys.readouterr()
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(workdir), "-q", stop, "--config.sweep.seeds=2"]) == 2
    assert "holds a run of a different config (sweep.seeds: 1 -> 2)" in capsys.readouterr().err


def test_proportion_gap_and_its_standard_error_on_a_planted_sampler():
    """Stories drawn with known rates: the gap's standard error is the spread of the gap over repeated draws, and
    `beyond_noise` says yes about as often as a 2.5 % one-sided test should when asked and not asked are alike,
    and nearly always at the regime the default aims at (0.8 vs 0.05, 64 stories a side)."""
    rng = np.random.default_rng(0)
    n, draws = 64, 4000
    for asked, unasked in ((0.5, 0.5), (0.8, 0.05), (0.3, 0.1)):
        a, u = rng.binomial(n, asked, draws) / n, rng.binomial(n, unasked, draws) / n
        gap, se = proportion_gap(a, u, n, n)
        assert gap.mean() == pytest.approx(asked - unasked, abs=0.01)
        assert np.sqrt(np.mean(se ** 2)) == pytest.approx(gap.std(), rel=0.1)
        yes = beyond_noise(gap, se).mean()
        if asked == unasked:
            assert yes < 0.05
        elif asked == 0.8:
            assert yes == 1.0


def test_study_reads_tinystories_instruct_files_and_measures_its_detectors(tmp_path, capsys):
    """The real-data path: the TFDS builder over the user's files, the first `train_size` stories, and the
    detector's agreement with labels that it does not match everywhere (real stories are not generated)."""
    from fttrace.stories import study
    train = generator.generate_records(160, seed=3)
    valid = generator.generate_records(40, seed=4, stream="validation")
    # two validation stories that ask for a twist in their header but tell none: labels the detector must miss
    plain = [i for i, r in enumerate(valid) if not r.has("Twist")][:2]
    for i in plain:
        valid[i] = valid[i].replace(features=valid[i].features + ("Twist",), labels=None)
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "TinyStories-Instruct-train.txt").write_text(record.render_file(train))
    (manual / "TinyStories-Instruct-valid.txt").write_text(record.render_file(valid))
    overrides = ["data.dataset=tinystories_instruct", f"data.manual_dir={manual}", "data.train_size=120",
                 "data.validation_size=40", f"data.data_dir={tmp_path / 'tfds'}"]
    config = config_lib.load(f"{CONFIG}:tiny", overrides)
    data = study.build_data(config, tmp_path / "run")
    assert data.corpus.ranges["none"] == (0, 120)
    assert len(data.validation) == 40 and data.validation.features[:, FEATURES.index("Twist")].sum() == sum(
        r.asks("Twist") for r in valid)
    assert len(data.without_feature) == sum(not r.has("Twist") for r in valid)
    twist = data.agreement["Twist"]
    assert (twist.false_neg, twist.false_pos) == (2, 0) and twist.accuracy == pytest.approx(38 / 40)
    assert (tmp_path / "tfds").is_dir() and not (tmp_path / "run" / "data").exists()
    # files missing: one line that says where to put them, exit 2
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(tmp_path / "w"), "-q",
                     "--config.data.dataset=tinystories_instruct", f"--config.data.manual_dir={tmp_path / 'none'}"]
                    ) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TinyStories-Instruct-train.txt" in err[0] and str(tmp_path / "none") in err[0]


def test_more_prompts_than_the_validation_stories_hold_is_one_line(tmp_path, capsys):
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(tmp_path / "w"), "-q", "--config.generate.prompts=500"]
                    ) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: config key 'generate.prompts': asks for 500 headers")


@pytest.mark.parametrize("override, key", [
    ("sweep.deletions=('filter','bogus')", "sweep.deletions"),
    ("recovery.eval_steps=(0,3)", "recovery.eval_steps"),
    ("data.feature=Twister", "data.feature"),
    ("data.dataset=tinystories", "data.dataset"),
    ("finetune.stop_below=1.5", "finetune.stop_below"),
    ("recovery.control_lr_factors=(1.0,-10.0)", "recovery.control_lr_factors"),
])
def test_bad_config_is_one_clear_error(tmp_path, capsys, override, key):
    assert_config_error(f"{CONFIG}:tiny", override, key, tmp_path / "w", capsys)
