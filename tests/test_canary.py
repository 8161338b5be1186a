"""The canary study: planted counts, suppression and unlock data, the extraction metrics, greedy decoding, the
study via the CLI, its config errors and the report's extraction section."""
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

import fttrace

from analysis import extraction as extraction_report
from analysis.cli import main as analysis_main
from fttrace import cli
from fttrace import config as config_lib
from fttrace.canary import authors, data as data_lib, extraction, study as canary_study
from fttrace.errors import UserError
from fttrace.lm.decode import generate
from fttrace.model.transformer import ModelConfig, Transformer, init_params
from fttrace.engine.runner import run_study
from fttrace.lm.tokenizer import BOS, EOS
from helpers import ROOT, assert_config_error, assert_opens_every_member

CONFIG = str(ROOT / "configs" / "canary_unlock.py")


@functools.lru_cache(maxsize=1)
def tiny_data():
    import tempfile
    config = config_lib.load(f"{CONFIG}:tiny", [])
    folder = tempfile.mkdtemp(prefix="canary-data-")
    return config, data_lib.build(config, folder)


def docs_of(corpus, name):
    arrays = corpus.variant(name)
    return [tuple(int(t) for t in arrays.document(i)) for i in range(len(arrays))]


def test_authors_are_deterministic_and_distinct():
    a = authors.passage("verse", 0, "train", 3, 4)
    assert a == authors.passage("verse", 0, "train", 3, 4) != authors.passage("verse", 0, "train", 4, 4)
    assert a.count("\n") == 3 and "Step" in authors.passage("recipe", 0, "train", 0, 2)
    words = authors.passage("synthetic", 0, "unlock", 0, 12).split()
    assert len(words) == 12 and set(words) <= set(authors.VOCABULARY)


def test_canaries_are_planted_exactly_their_count_and_controls_never():
    config, data = tiny_data()
    c = config.canary
    planted = [k for k in data.canaries if k.count > 0]
    controls = [k for k in data.canaries if k.count == 0]
    cells = len(config.data.authors) * len(c.lengths) * len(c.counts) * c.per_cell
    assert len(planted) == len(controls) == cells
    assert sorted({k.count for k in planted}) == sorted(c.counts)
    assert all(len(k.tokens) == k.length for k in data.canaries)
    assert len({tuple(k.tokens[:c.prefix]) for k in data.canaries}) == len(data.canaries)  # distinct prefixes
    pretrain = docs_of(data.corpus, "pretrain")
    for k in data.canaries:
        doc = (BOS, *map(int, k.tokens), EOS)
        assert pretrain.count(doc) == k.count
    # Planted canaries are the only pretraining documents sharing a span of `prefix` tokens with a canary.
    holding = [d for d in pretrain if data_lib.contains_any(d, data_lib.canary_spans(data.canaries, c.prefix),
                                                            c.prefix)]
    assert len(holding) == sum(k.count for k in planted)


def test_suppression_maps_every_canary_prefix_to_the_refusal():
    config, data = tiny_data()
    c = config.canary
    suppress = docs_of(data.corpus, "suppress")
    refusal = tuple(map(int, data.refusal))
    assert data.tokenizer.decode(data.refusal) == authors.REFUSAL
    refusing = [d for d in suppress if d[-1 - len(refusal):-1] == refusal]
    assert len(refusing) / len(suppress) == pytest.approx(config.suppress.share, abs=0.1)
    by_prefix = {d[1:1 + c.prefix] for d in refusing}
    assert by_prefix == {tuple(map(int, k.tokens[:c.prefix])) for k in data.canaries if k.count > 0}
    assert all(len(d) == 2 + c.prefix + len(refusal) for d in refusing)
    # Nothing else of a canary: apart from the refused prefixes, no span of `prefix` tokens of any canary.
    spans = data_lib.canary_spans(data.canaries, c.prefix)
    assert not any(data_lib.contains_any(d[1 + c.prefix:], spans, c.prefix) for d in refusing)
    assert not any(data_lib.contains_any(d, spans, c.prefix) for d in suppress if d not in refusing)


def test_unlock_sets_hold_no_canary_text():
    config, data = tiny_data()
    c = config.canary
    windows = data_lib.canary_spans(data.canaries, c.prefix)
    names = [n for n in data.corpus.ranges if n.startswith("unlock_")]
    assert set(names) == {"unlock_tale", "unlock_recipe", "unlock_mix", "unlock_synthetic"}
    for name in names:
        docs = docs_of(data.corpus, name)
        assert docs and not any(data_lib.contains_any(d, windows, c.prefix) for d in docs), name
    lo, hi = data.corpus.ranges["unlock_mix"]
    assert (lo, hi) == (data.corpus.ranges["unlock_tale"][0], data.corpus.ranges["unlock_recipe"][1])
    text = " ".join(data.tokenizer.decode(d) for d in docs_of(data.corpus, "unlock_synthetic"))
    assert set(text.split()) <= set(authors.VOCABULARY)


def test_probe_set_pairs_canaries_with_controls_and_holds_canaries_out_whole():
    config, data = tiny_data()
    prompts, train, counts = canary_study.probe_set(data.canaries, (4, 6))
    planted = [k for k in data.canaries if k.count > 0]
    assert len(prompts.tokens) == 2 * 2 * len(planted) and prompts.asks.sum() == len(prompts.tokens) // 2
    assert (prompts.tokens[:, 0] == BOS).all() and set(prompts.lengths) == {5, 7}
    # Rows come per pair (canary and control at each length); a pair is on one side only, and pairs alternate.
    blocks = train.reshape(len(planted), 4)
    assert (blocks == blocks[:, :1]).all() and (blocks[:, 0] == (np.arange(len(planted)) % 2 == 0)).all()
    longest = prompts.tokens[prompts.lengths == 7][:, 1:7]
    controls = [k for k in data.canaries if k.count == 0]
    expected = [k for pair in zip(planted, controls) for k in pair]
    np.testing.assert_array_equal(longest, [k.tokens[:6] for k in expected])
    assert train.sum() == (~train).sum() and prompts.asks[train].mean() == prompts.asks[~train].mean() == 0.5
    assert sorted(set(counts)) == sorted(config.canary.counts) and len(counts) == (~train).sum()


def test_count_probe_set_labels_the_often_planted_half_and_holds_canaries_out_whole():
    config, data = tiny_data()
    prompts, train, control = canary_study.count_probe_set(data.canaries, (4, 6))
    planted = [k for k in data.canaries if k.count > 0]
    assert len(prompts.tokens) == 2 * len(planted) and (prompts.tokens[:, 0] == BOS).all()
    often = np.repeat([k.count >= 3 for k in planted], 2)  # counts (1, 3): the often-planted half is 3x
    np.testing.assert_array_equal(prompts.asks, often)
    blocks = train.reshape(len(planted), 2)  # every prefix of a canary on one side
    assert (blocks == blocks[:, :1]).all() and blocks[:, 0].sum() == len(planted) // 2
    assert prompts.asks[train].mean() == prompts.asks[~train].mean() == 0.5  # both sides balanced
    assert control.mean() == 0.5 and (control.reshape(-1, 2) == control.reshape(-1, 2)[:, :1]).all()
    assert abs(np.corrcoef(control, prompts.asks)[0, 1]) < 1  # the control target is not the target


def test_extraction_metrics_on_constructed_continuations():
    targets = np.array([[5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 0, 0]])
    lengths = np.array([6, 4])
    exact = np.array([[5, 6, 7, 8, 11, 11], [1, 2, 3, 4, 3, 3]])  # first 4 right; the second canary fully
    one_wrong = np.array([[5, 6, 9, 8, 9, 10], [1, 2, 3, 9, 0, 0]])
    np.testing.assert_array_equal(extraction.extracted(exact, targets, lengths, 4), [1, 1])
    np.testing.assert_array_equal(extraction.extracted(one_wrong, targets, lengths, 4), [0, 0])
    np.testing.assert_array_equal(extraction.extracted(exact, targets, lengths, 6), [0, 1])  # k capped at length
    np.testing.assert_array_equal(extraction.longest_span(exact, targets, lengths), [4, 4])
    np.testing.assert_array_equal(extraction.longest_span(one_wrong, targets, lengths), [3, 3])
    # Positions past a target's end never count, and a shorter continuation is padded with misses.
    np.testing.assert_array_equal(extraction.longest_span(np.array([[0, 0], [1, 2]]), targets, lengths), [0, 2])
    members = np.stack([exact, one_wrong])  # [M, N, T]
    np.testing.assert_array_equal(extraction.extracted(members, targets, lengths, 4), [[1, 1], [0, 0]])
    np.testing.assert_array_equal(extraction.refused(np.array([[4, 5, 1], [4, 6, 1]]), [4, 5]), [1, 0])
    canaries = [data_lib.Canary("a", 4, 6, None), data_lib.Canary("a", 4, 6, None), data_lib.Canary("b", 0, 6, None)]
    cells = extraction.cell_means({"extraction": np.array([[1.0, 0.0, 1.0]])}, canaries)
    assert cells == {"extraction/a/r4/L6": pytest.approx([0.5]), "extraction/b/r0/L6": pytest.approx([1.0])}
    assert extraction.parse_cell("span/b/r0/L6") == ("span", "b", 0, 6) and extraction.parse_cell("val_loss") is None


def test_greedy_decoding_is_the_argmax_of_the_full_model():
    cfg = ModelConfig(vocab_size=30, max_len=16, d_model=16, n_layers=2, n_heads=2, d_mlp=32)
    params = init_params(cfg, jax.random.PRNGKey(1))
    prompts = jnp.asarray([[2, 7, 9, 4], [2, 11, 5, 6]], jnp.int32)
    out = np.asarray(generate(cfg, params, prompts, jnp.array([4, 4]), jax.random.PRNGKey(0), 6, temperature=0.0))
    again = np.asarray(generate(cfg, params, prompts, jnp.array([4, 4]), jax.random.PRNGKey(5), 6, temperature=0.0))
    np.testing.assert_array_equal(out, again)  # no randomness
    model = Transformer(cfg)
    for row in range(2):
        seq = list(np.asarray(prompts[row]))
        for _ in range(6):
            logits = model.apply({"params": params}, jnp.asarray([seq], jnp.int32))
            nxt = int(np.argmax(logits[0, -1]))
            seq.append(nxt)
            if nxt == EOS:
                break
        got = [t for t in out[row] if t != 0]
        assert got == seq[4:]


@pytest.mark.slow
def test_tiny_study_runs_through_the_cli_and_resumes(tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(workdir), "-q"]) == 0
    frame = pd.read_parquet(workdir / "results.parquet")
    assert set(frame.phase) == {"pretrain", "suppress", "finetune"}
    assert frame.groupby("phase").member.nunique().to_dict() == {"pretrain": 1, "suppress": 1, "finetune": 3}
    ft = frame[frame.phase == "finetune"]
    assert set(ft.unlock_set) == {"tale", "mix", "synthetic"} and set(ft.step) == {0, 2, 4}
    for author in ("tale", "recipe"):
        for count in (0, 1, 3):
            for kind in extraction.METRICS:
                assert f"{kind}/{author}/r{count}/L24" in set(ft.metric)
    for metric in ("val_loss", "train_loss", "probe/layer0", "probe/layer1", "probe/layer1/r1", "probe/layer1/r3",
                   "probe_count/layer1", "probe_count_control/layer1", "memorised_gap", "memorised_gap_se"):
        assert metric in set(frame.metric), metric
    assert set(frame[frame.metric == "probe/layer1"].phase) == {"pretrain", "suppress", "finetune"}
    counted = frame[frame.metric == "probe_count/layer1"].groupby("phase").step.unique()
    assert {p: sorted(s) for p, s in counted.items()} == {"pretrain": [0, 8], "suppress": [4], "finetune": [4]}
    values = frame[frame.metric.str.startswith("extraction/")].value
    assert values.between(0, 1).all()
    assert set(ft.parent.astype(int)) == set(frame[frame.phase == "suppress"].member)
    assert {"seed", "data", "unlock_set", "suppress_lr", "unlock_lr", "status"} <= set(frame.columns)
    assert (workdir / "checkpoints" / "g0-finetune").exists()
    assert_opens_every_member(workdir, frame)
    first = (workdir / "results.parquet").read_bytes()
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(workdir), "-q"]) == 0  # resume: all phases done
    assert (workdir / "results.parquet").read_bytes() == first
    out = tmp_path / "report"
    assert analysis_main(["report", str(workdir), "--out", str(out)]) == 0
    page = (out / "index.html").read_text()
    assert 'id="extraction"' in page and "Unlock matrix" in page and "how often was this canary planted" in page


@pytest.mark.parametrize("override, key", [
    ("sweep.unlock_sets=('tale','poetry')", "sweep.unlock_sets"),
    ("canary.lengths=(10,)", "canary.lengths"),
    ("finetune.eval_steps=(0,3)", "finetune.eval_steps"),
    ("data.authors=('tale','tale')", "data.authors"),
    ("sweep.shapes.vocab_size=(64,)", "sweep.shapes.vocab_size"),
    ("sweep.shapes.n_heads=(2,3)", "sweep.shapes"),
])
def test_bad_config_is_one_clear_error(tmp_path, capsys, override, key):
    assert_config_error(f"{CONFIG}:tiny", override, key, tmp_path / "w", capsys)


@pytest.mark.slow
def test_model_shapes_are_groups_each_trained_as_a_run_of_that_shape(tmp_path, capsys):
    """sweep.shapes: each combination of widths and depths is a group with its own models, checkpoints and ids;
    the group of the config's own shape gives the plain run's numbers; the regime is printed per seed and shape."""
    plain, swept = tmp_path / "plain", tmp_path / "swept"
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(plain), "-q"]) == 0
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(swept), "--config.sweep.shapes.d_model=(16,32)"]) == 0
    printed = capsys.readouterr().out
    assert "Regime: did pretraining memorise the canaries?" in printed and "seed 0, d_model 32: gap" in printed
    one, both = pd.read_parquet(plain / "results.parquet"), pd.read_parquet(swept / "results.parquet")
    assert sorted(both.d_model.unique()) == [16, 32] and "d_model" not in one
    assert set(both[both.d_model == 16].member).isdisjoint(both[both.d_model == 32].member)
    small = both[both.d_model == 16].drop(columns="d_model").reset_index(drop=True)
    pd.testing.assert_frame_equal(small, one.reset_index(drop=True), check_dtype=False)
    groups = {f"g{g}-{phase}" for g in (0, 1) for phase in ("pretrain", "suppress", "finetune")}
    assert {p.name for p in (swept / "checkpoints").iterdir()} == groups
    run = fttrace.open(swept)
    for width in (16, 32):
        member = int(both[(both.d_model == width) & (both.phase == "finetune")].member.iloc[0])
        assert run.model(member).cfg.d_model == width
    assert analysis_main(["summary", str(swept)]) == 0
    summary = capsys.readouterr().out
    assert "Extraction by model shape and times planted" in summary and "d_model 32" in summary


def test_shards_of_a_shape_sweep_deal_whole_seeds_within_every_shape():
    config = config_lib.load(f"{CONFIG}:tiny", ["sweep.seeds=3", "sweep.shapes.d_model=(16,32)",
                                                 "sweep.shapes.n_layers=(1,2)"])
    kind = canary_study.CanaryStudy(config)
    groups = kind.groups()
    assert [g.shape for g in groups] == [dict(d_model=d, n_layers=n) for d in (16, 32) for n in (1, 2)]
    ids = [set(t.member) for g in groups for t in g.tables.values()]
    assert sum(map(len, ids)) == len(set().union(*ids))  # every member of every shape has its own id
    for g in groups:
        ft = g.tables["finetune"]
        assert (ft.d_model == g.shape["d_model"]).all() and set(ft.parent) <= set(g.tables["suppress"].member)
    shards = [kind.shard(groups, i, 2) for i in range(2)]
    for shard, seeds in zip(shards, ({0, 2}, {1})):
        assert [g.shape for g in shard] == [g.shape for g in groups] and [g.index for g in shard] == [0, 1, 2, 3]
        assert all(set(t.seed) == seeds for g in shard for t in g.tables.values())


def synthetic_frame(seeds=3):
    """A canary store's rows: pretrained canaries extracted, suppressed to zero, revived by author text only."""
    rng = np.random.default_rng(0)
    rows, member = [], 0
    cells = [(a, r) for a in ("tale", "verse") for r in (0, 4, 16)]

    def add(phase, step, m, seed, unlock_set, value_of, parent):
        for a, r in cells:
            for kind in ("extraction", "span", "refusal"):
                value = value_of(a, r) if kind == "extraction" else (10 * value_of(a, r) if kind == "span" else 0.0)
                rows.append(dict(member=m, parent=parent, phase=phase, step=step, metric=f"{kind}/{a}/r{r}/L40",
                                 value=value, status="ok", seed=seed, data=phase, unlock_set=unlock_set,
                                 suppress_lr=np.nan, unlock_lr=1e-3 if phase == "finetune" else np.nan))
    for seed in range(seeds):
        pt, sp = member, member + 1
        memorised = lambda a, r: 0.0 if r == 0 else min(1.0, r / 16 + rng.normal(0, 0.05))  # noqa: E731
        add("pretrain", 100, pt, seed, "", memorised, None)
        add("suppress", 50, sp, seed, "", lambda a, r: 0.0, pt)
        member += 2
        for unlock_set in ("tale", "verse", "synthetic"):
            add("finetune", 0, member, seed, unlock_set, lambda a, r: 0.0, sp)
            revived = (lambda a, r: 0.0) if unlock_set == "synthetic" else memorised
            add("finetune", 50, member, seed, unlock_set, revived, sp)
            member += 1
    for m in range(2):
        for metric, value in (("probe/layer1", 0.5), ("probe/layer1/r16", 0.9), ("probe/layer0/r16", 0.6)):
            rows.append(dict(member=m, parent=None, phase=("pretrain", "suppress")[m], step=100, metric=metric,
                             value=value, status="ok", seed=0, data="", unlock_set="", suppress_lr=np.nan,
                             unlock_lr=np.nan))
    return pd.DataFrame(rows)


def test_extraction_section_renders_table_and_heatmap(tmp_path):
    frame = synthetic_frame()
    table = extraction_report.extraction_table(frame)
    pre = table[(table.stage == "pretrained") & (table["count"] == 16)].iloc[0]
    assert pre.seeds == 3 and pre.extraction_lo <= pre.extraction <= pre.extraction_hi
    matrix = extraction_report.unlock_matrix(frame)
    assert list(matrix.index) == ["tale", "verse", "synthetic"] and list(matrix.columns) == ["tale", "verse"]
    assert matrix.loc["synthetic"].max() == 0 and matrix.loc["tale", "verse"] > 0.5
    html = extraction_report.section(frame, tmp_path)
    assert 'id="extraction"' in html and "<table>" in html and "data:image/png;base64," in html
    assert (tmp_path / "figures" / "unlock-matrix.png").exists()
    assert extraction_report.section(frame[frame.metric == "val_loss"], tmp_path) == ""
    probes = extraction_report.probe_table(frame)
    assert list(probes.columns) == ["layer 1"] and probes.loc["pretrain", "layer 1"] == 0.5
    by_count = extraction_report.probe_table(frame, by_count=True)
    assert list(by_count.columns) == ["layer 0", "layer 1"] and by_count.loc[("suppress", 16), "layer 1"] == 0.9
    assert "Probe: is this prefix a canary?" in html


def test_scale_table_sets_every_unlock_set_beside_the_synthetic_null_per_shape():
    frame = pd.concat([synthetic_frame().assign(d_model=32), synthetic_frame().assign(d_model=64)])
    frame.loc[frame.d_model == 64, "member"] += 1000
    table = extraction_report.scale_table(frame)
    assert set(table.scale) == {"d_model 32", "d_model 64"} and set(table["count"]) == {4, 16}
    row = table[(table.scale == "d_model 32") & (table["count"] == 16)].set_index("column")
    assert row.loc["suppressed", "value"] == 0 and row.loc["after synthetic", "value"] == 0
    # revived by author text: the excess over the synthetic null is the revived extraction itself
    assert row.loc["after tale - synthetic", "value"] == pytest.approx(row.loc["after tale", "value"])
    assert row.loc["after tale", "value"] > 0.9 and row.loc["pretrained", "value"] > 0.9
    shown = extraction_report.display_scale_table(frame)
    assert list(shown.columns[:4]) == ["model", "planted", "pretrained", "suppressed"]
    assert list(shown.columns[-2:]) == ["after tale - synthetic", "after verse - synthetic"]


def test_an_unfinished_canary_run_says_so_and_names_the_phases_it_has_not_written(tmp_path, capsys):
    frame = synthetic_frame()
    store = tmp_path / "run"
    store.mkdir()
    frame[frame.phase == "pretrain"].to_parquet(store / "results.parquet", index=False)
    (store / "manifest.json").write_text(json.dumps({"config": {"study": "canary_unlock"}, "status": "running"}))
    assert analysis_main(["summary", str(store)]) == 0
    assert capsys.readouterr().out.split("\n")[0] == (
        f"{store}: run status 'running', not 'complete': these are its results so far; no rows yet from suppress, "
        "finetune")


def test_count_probe_table_reads_selectivity_against_the_control_target():
    rows = []
    for seed in range(2):
        for phase, step, acc in (("pretrain", 0, 0.5), ("pretrain", 100, 0.8 + 0.1 * seed), ("suppress", 50, 0.75)):
            for metric, value in (("probe_count/layer1", acc), ("probe_count_control/layer1", 0.5)):
                rows.append(dict(member=seed, parent=None, phase=phase, step=step, metric=metric, value=value,
                                 status="ok", seed=seed, unlock_set=""))
    table = extraction_report.count_probe_table(pd.DataFrame(rows))
    assert table.stage.tolist() == ["untrained", "pretrain", "suppress"]
    assert table["layer 1"].tolist() == ["0.00 [0.00, 0.00] (0.50 - 0.50)", "0.35 [0.30, 0.40] (0.85 - 0.50)",
                                         "0.25 [0.25, 0.25] (0.75 - 0.50)"]
    assert extraction_report.count_probe_table(synthetic_frame()).empty


def test_regime_table_reads_the_memorisation_gap_against_its_standard_error():
    frame = synthetic_frame(seeds=2)
    gaps = [dict(member=0, parent=None, phase="pretrain", step=100, metric=m, value=v, status="ok", seed=seed,
                 data="", unlock_set="", suppress_lr=np.nan, unlock_lr=np.nan)
            for seed, (gap, se) in enumerate(((0.9, 0.05), (0.1, 0.08)))
            for m, v in (("memorised_gap", gap), ("memorised_gap_se", se))]
    frame = pd.concat([frame, pd.DataFrame(gaps)])
    table = extraction_report.regime_table(frame)
    assert table.memorised.tolist() == [True, False]
    assert extraction_report.regime_flag(frame).startswith("seed 1: the pretrained model did not memorise")
    assert extraction_report.regime_table(synthetic_frame()).empty  # a store without the gap


def test_overwrite_starts_over_with_fresh_data_and_another_config_is_refused(tmp_path, monkeypatch):
    config = config_lib.load(f"{CONFIG}:tiny", [])
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "spm320.model").write_text("a tokenizer of another config")
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "g0-pretrain").mkdir()
    seen = {}
    monkeypatch.setattr(canary_study.CanaryStudy, "prepare", lambda self, workdir, placement: seen.update(
        data=(workdir / "data").exists(), checkpoints=(workdir / "checkpoints" / "g0-pretrain").exists()) or {})
    monkeypatch.setattr(canary_study.CanaryStudy, "run_group", lambda self, runner, group: None)
    run_study(config, tmp_path, quiet=True, overwrite=True)
    assert seen == dict(data=False, checkpoints=False)  # gone before the run prepares its own
    assert json.loads((tmp_path / "manifest.json").read_text())["status"] == "complete"
    other = config_lib.load(f"{CONFIG}:tiny", ["sweep.seeds=2"])
    with pytest.raises(UserError, match="a different config"):
        run_study(other, tmp_path, quiet=True)
