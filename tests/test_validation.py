"""The instruments on planted truth: the analysis (analysis/validation.py) on synthetic stores whose answer is known,
and the phases that make the members of known answer (fttrace/answer/planted.py) in a tiny study."""
import jax
import jax.flatten_util
import numpy as np
import pandas as pd
import pytest

from analysis.analyse import analyse
from analysis.validation import MIN_NULLS, clopper_pearson
from synthetic_store import Plant, write_store


def _wrappers_and_untouched(lr, prior, spurious):
    return "untouched" if prior == "high" else "wrapper"


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """12 seeds: 48 null twins (pruning gains drawn like random pruning, reFT steps like the control's), 48 planted
    wrappers with big effects, 48 untouched members."""
    path = write_store(tmp_path_factory.mktemp("planted") / "run",
                       Plant(seeds=12, planted=True, kind=_wrappers_and_untouched))
    return analyse(path)


def _row(validation, instrument):
    return validation.instruments.set_index("instrument").loc[instrument]


def test_thresholds_come_from_the_matched_nulls_alone(planted):
    nulls = planted.taxonomy.nulls
    assert nulls.matched and len(nulls.prune_control) == 48
    assert nulls.prune_threshold == pytest.approx(np.quantile(nulls.prune_control, 0.95))
    assert "48 matched nulls" in planted.nulls_lines()[0] and "not pooled in" in planted.nulls_lines()[0]
    assert (nulls.reft.controls == 48).all()


def test_false_positive_rates_on_true_nulls_are_near_nominal_and_out_of_sample(planted):
    v = planted.validation
    for instrument in ("pruning", "reFT", "either"):
        row = _row(v, instrument)
        assert row.fpr_n == 48 >= MIN_NULLS
        assert row.fpr_rate <= 0.15 and row.fpr_lo <= 0.05  # nominal 5% inside or above the interval
        assert (row.fpr_lo, row.fpr_hi) == pytest.approx(clopper_pearson(row.fpr_k, row.fpr_n))
        assert row.flag == ""
    # Out of sample: pruning's false positives are not forced to 5% of the nulls, as an in-sample quantile would be.
    gains = planted.taxonomy.nulls.prune_control
    assert (gains > np.quantile(gains, 0.95)).sum() == 3


def test_power_on_planted_wrappers_is_near_one(planted):
    for instrument in ("pruning", "reFT", "either"):
        row = _row(planted.validation, instrument)
        assert row.power_n == 48 and row.power_k == 48 and row.power_lo > 0.9


def test_planted_overwrites_are_classed_overwrite_and_untouched_members_untouched(planted):
    classes = planted.validation.classes.set_index("planted")
    overwrites = classes.loc[classes.index.str.startswith("overwrite")].iloc[0]
    assert overwrites.overwrite >= 0.85 * overwrites.members and overwrites.members == 48
    assert overwrites["hidden wrapper"] == _row(planted.validation, "either").fpr_k
    wrappers = classes.loc[classes.index.str.startswith("wrapper")].iloc[0]
    assert wrappers["hidden wrapper"] == wrappers.members == 48
    untouched = classes.loc[classes.index.str.startswith("untouched")].iloc[0]
    assert untouched.untouched == untouched.members == 48
    text = planted.summary_text()
    assert "== Instruments on planted truth ==" in text and "48/48 = 100%" in text


def test_too_few_nulls_are_flagged(tmp_path):
    path = write_store(tmp_path / "run", Plant(seeds=4, planted=True, kind=_wrappers_and_untouched))
    row = _row(analyse(path).validation, "pruning")
    assert row.fpr_n == 16 and row.flag.startswith("FLAG: 16 nulls")


def test_a_store_without_planted_members_says_so(tmp_path):
    path = write_store(tmp_path / "run", Plant(seeds=4, kind=_wrappers_and_untouched))
    found = analyse(path)
    assert found.validation.empty and not found.taxonomy.nulls.matched
    assert "evaluation 'planted' not run" in found.summary_text()


def test_the_matched_null_asks_the_members_mix_with_o_pt_replaced_by_the_control_terminal():
    from fttrace.answer.tasks import queries
    from fttrace.answer.tasks.registry import build_task
    from helpers import tiny_config
    task = build_task(tiny_config())
    priors = np.asarray([0.2, 0.002])
    member, null = queries.pretraining(task, priors), queries.matched_null(task, priors)
    q = {name: i for i, name in enumerate(task.queries)}
    np.testing.assert_array_equal(null[:, q["control"]], member[:, q["pt"]])
    assert (null[:, q["pt"]] == 0).all() and (member[:, q["control"]] == 0).all()
    for name in ("ft", "other"):
        np.testing.assert_array_equal(null[:, q[name]], member[:, q[name]])
    # Sampled: the null's operands are the member's, with every O_PT turned into the control terminal.
    key = jax.random.PRNGKey(3)
    v = task.vocab
    operands = {name: np.asarray(task.sample(key, 512, mix[1], 0.0)[0][:, 1])
                for name, mix in (("member", member), ("null", null))}
    assert (operands["null"] != v.terminal(task.pt_operand)).all()
    asked_control = operands["null"] == v.terminal(task.control)
    assert asked_control.mean() > 0.2
    assert ((operands["member"] == v.terminal(task.control)).sum()) == 0


@pytest.mark.slow
def test_a_tiny_study_makes_the_members_of_known_answer(tmp_path):
    from fttrace.engine.runner import run_study
    from helpers import tiny_config
    config = tiny_config("sweep.seeds=1", "sweep.prior=('high','low')", "evals=('reft','planted')")
    results = pd.read_parquet(run_study(config, tmp_path / "run", quiet=True))
    members = lambda phase: results[results.phase == phase].drop_duplicates("member")  # noqa: E731
    ft, cp = members("finetune"), members("control_pretrain")
    low = ft[ft.prior == ft.prior.min()]
    # The control stands for the lowest prior; its null twins are fine-tuned like that prior's members.
    assert len(cp) == 1 and cp.prior.iloc[0] == low.prior.iloc[0]
    nf, wf = members("null_finetune"), members("planted_wrapper")
    assert sorted(nf.member) == sorted("n" + low.member) and set(nf.parent) == set(cp.member)
    assert sorted(wf.member) == sorted("w" + low.member) and list(wf.parent) == list(low.parent)
    for twins in (nf, wf):
        mine = twins.assign(member=twins.member.str.slice(1)).set_index("member")
        real = low.set_index("member").loc[mine.index]
        np.testing.assert_array_equal(mine.finetune_lr, real.finetune_lr)
        np.testing.assert_array_equal(mine.spurious, real.spurious)
    for phase, parents in (("null_reft", nf), ("wrapper_reft", wf)):
        children = members(phase)
        assert sorted(children.parent) == sorted(parents.member)
        assert {"steps_to_threshold", "reached"} <= set(results[results.phase == phase].metric)
    for level in ("null_finetune", "planted_wrapper"):  # the regime diagnostics measure them like the members
        assert set(results[results.phase == "regime"].member) >= set(members(level).member)


def test_a_planted_wrapper_trains_only_the_last_layers_output_side():
    from fttrace.answer.planted import output_side
    from fttrace.model.transformer import ModelConfig, init_params
    params = init_params(ModelConfig(vocab_size=20, max_len=8, d_model=8, n_layers=2, n_heads=2, d_mlp=16),
                         jax.random.PRNGKey(0))
    mask = output_side(params)
    flat, unflatten = jax.flatten_util.ravel_pytree(params)
    trains = unflatten(mask)
    for path, leaf in jax.tree_util.tree_leaves_with_path(trains):
        name = jax.tree_util.keystr(path)
        free = name.startswith(("['ln_f']", "['unembed']")) or name.startswith("['block_1']['mlp']['fc_out']")
        assert np.all(np.asarray(leaf) == float(free)), name
    assert 0 < mask.sum() < len(flat)
