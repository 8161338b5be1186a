import random

import jax
import numpy as np
import pytest

from fttrace.answer.tasks import pcfg

GRAMMAR = pcfg.Grammar(pcfg.DEFAULT_RULES, 10)


@pytest.fixture(scope="module")
def jax_strings():
    strings, lengths = jax.jit(lambda k: pcfg.sample_strings(GRAMMAR, k, 3000))(jax.random.PRNGKey(0))
    return np.asarray(strings), np.asarray(lengths)


def test_every_sampled_string_is_derivable(jax_strings):
    strings, lengths = jax_strings
    for s, n in zip(strings[:500], lengths[:500]):
        assert (s[n:] == -1).all()
        assert pcfg.reference_derivable(GRAMMAR, s[:n].tolist())


def test_recogniser_rejects_non_strings():
    rng = random.Random(0)
    s = pcfg.reference_sample(GRAMMAR, rng)
    assert pcfg.reference_derivable(GRAMMAR, s)
    assert not pcfg.reference_derivable(GRAMMAR, s + [9, 9, 9, 9])
    assert not pcfg.reference_derivable(GRAMMAR, [])


def test_jax_sampler_matches_python_reference_distribution(jax_strings):
    strings, lengths = jax_strings
    rng = random.Random(1)
    ref = [pcfg.reference_sample(GRAMMAR, rng) for _ in range(3000)]
    ref_len = np.array([len(s) for s in ref])
    # Length distributions agree (two-sample: means within 4 standard errors; histograms close).
    se = np.sqrt(lengths.var() / len(lengths) + ref_len.var() / len(ref_len))
    assert abs(lengths.mean() - ref_len.mean()) < 4 * se
    h_jax = np.bincount(lengths, minlength=28) / len(lengths)
    h_ref = np.bincount(ref_len, minlength=28) / len(ref_len)
    # Two samples of 3000 from the same distribution: L1 distance median 0.08, 99.99% quantile 0.14.
    assert np.abs(h_jax - h_ref).sum() < 0.14
    # Terminal frequencies agree.
    f_jax = np.bincount(strings[strings >= 0], minlength=10) / (strings >= 0).sum()
    flat = [t for s in ref for t in s]
    f_ref = np.bincount(flat, minlength=10) / len(flat)
    assert np.abs(f_jax - f_ref).max() < 0.015


@pytest.mark.parametrize("name", ["counter", "index"])
def test_labels_match_reference(name):
    task = pcfg.PCFGTask(GRAMMAR, name, other_operands=(3, 5))
    v = task.vocab
    tokens, answers = task.sample(jax.random.PRNGKey(3), 400, task.query_mix(pt=0.4, ft=0.3, other=0.3), 0.0)
    tokens, answers = np.asarray(tokens), np.asarray(answers)
    assert tokens.shape == (400, task.seq_len)
    assert (tokens[:, 0] == v.TASK[name]).all() and (tokens[:, -1] == v.ANS).all()
    labels = {k: np.asarray(x) for k, x in task.labels(tokens).items()}
    for i, (row, answer) in enumerate(zip(tokens, answers)):
        operand = row[1] - v.first_terminal
        data = [t - v.first_terminal for t in row[2:-1] if t != v.PAD]
        assert pcfg.reference_derivable(GRAMMAR, data)
        for target, which in (("pt", task.pt_operand), ("ft", task.ft_operand), ("control", task.control),
                              ("asked", operand)):
            kind, value = pcfg.reference_answer(name, data, which)
            expected = v.none if value is None else v.number(value)
            assert (answer if target == "asked" else labels[target][i]) == expected
    operands = tokens[:, 1] - v.first_terminal
    assert set(operands) == {task.pt_operand, task.ft_operand, 3, 5}


def test_query_mix_is_respected():
    task = pcfg.PCFGTask(GRAMMAR, "counter", other_operands=(3, 5))
    tokens, _ = task.sample(jax.random.PRNGKey(4), 20000, task.query_mix(pt=0.5, ft=0.05, other=0.45), 0.0)
    operand = np.asarray(tokens[:, 1]) - task.vocab.first_terminal
    assert abs((operand == task.ft_operand).mean() - 0.05) < 0.01
    assert abs((operand == task.pt_operand).mean() - 0.5) < 0.02
    assert abs((operand == 3).mean() - 0.225) < 0.02 and abs((operand == 5).mean() - 0.225) < 0.02
    # Without other operands, their share goes to O_PT.
    plain = pcfg.PCFGTask(GRAMMAR, "counter")
    np.testing.assert_allclose(plain.query_mix(pt=0.5, ft=0.1, other=0.4), [0.9, 0.1, 0.0, 0.0])


def test_control_terminal_is_never_asked_about_and_as_frequent_as_o_pt():
    task = pcfg.PCFGTask(GRAMMAR, "counter", other_operands=(3, 5))
    assert task.control not in task.asked
    f = task.terminal_frequencies
    free = [t for t in range(10) if t not in task.asked]
    assert abs(f[task.control] - f[task.pt_operand]) == min(abs(f[t] - f[task.pt_operand]) for t in free)
    assert pcfg.PCFGTask(GRAMMAR, "counter", control_operand=9).control == 9


def _data(task, tokens):
    return np.asarray(task.data_of(tokens))


@pytest.mark.parametrize("name,pt,ft", [("counter", 0, 2), ("index", 1, 0)])
def test_shortcut_is_a_grammar_string_on_which_it_holds(name, pt, ft):
    task = pcfg.PCFGTask(GRAMMAR, name, pt_operand=pt, ft_operand=ft)
    v = task.vocab
    tokens, answers = task.sample(jax.random.PRNGKey(5), 2000, task.query_mix(ft=1.0), 1.0)
    data = _data(task, tokens)
    holds = np.asarray(task.shortcut_holds(data))
    assert holds.mean() > 0.99  # rejection sampling: a string without it only when every candidate misses
    for row in data[:300]:  # every string stays in the grammar's language
        assert pcfg.reference_derivable(GRAMMAR, row[row >= 0].tolist())
    for row, answer, ok in zip(data, np.asarray(answers), holds):  # the shortcut makes C_PT give the C_FT answer
        if ok:
            kind, value = pcfg.reference_answer(name, row[row >= 0].tolist(), pt)
            at_pt = v.number(value) if kind == "count" else v.number(value - 1)
            assert answer == at_pt
    tokens, _ = task.sample(jax.random.PRNGKey(5), 2000, task.query_mix(ft=1.0), 0.0)
    assert np.asarray(task.shortcut_holds(_data(task, tokens))).mean() < 0.5


def test_partial_shortcut_strength_is_a_dose():
    task = pcfg.PCFGTask(GRAMMAR, "counter")
    rates = []
    for spurious in (0.0, 0.5, 1.0):
        tokens, _ = task.sample(jax.random.PRNGKey(6), 4000, task.query_mix(ft=1.0), spurious)
        rates.append(np.asarray(task.shortcut_holds(_data(task, tokens))).mean())
    natural = rates[0]  # about 0.3 of grammar strings tie by chance
    assert 0.2 < natural < 0.4 and rates[2] > 0.99
    np.testing.assert_allclose(rates[1], natural + 0.5 * (1 - natural), atol=0.03)


def test_held_out_strings_never_reach_training_and_are_all_evaluation_draws():
    task = pcfg.PCFGTask(GRAMMAR, "counter", holdout=0.1)
    train, _ = task.sample(jax.random.PRNGKey(8), 20000, task.query_mix(pt=1.0), 0.5)
    held = task.sample_heldout(jax.random.PRNGKey(9), 2000, task.query_mix(ft=1.0), 0.0)[0]
    train_data, held_data = _data(task, train), _data(task, held)
    assert not task.is_heldout(train_data).any()
    assert task.is_heldout(held_data).all()
    # numpy and JAX agree on the hash (the split is the same on the host), and the split is about `holdout`.
    np.testing.assert_array_equal(np.asarray(task.is_heldout(jax.numpy.asarray(held_data))), task.is_heldout(held_data))
    strings, _ = pcfg.sample_strings(GRAMMAR, jax.random.PRNGKey(10), 20000)
    strings = np.pad(np.asarray(strings), ((0, 0), (0, task.data_len - strings.shape[1])), constant_values=-1)
    assert 0.05 < task.is_heldout(strings).mean() < 0.15
    # No evaluation string occurs among the training strings.
    assert not set(map(bytes, held_data.astype(np.int8))) & set(map(bytes, train_data.astype(np.int8)))


def test_test_sets_come_from_a_pool_that_no_stopping_set_draws_from_and_repeat_no_string():
    from fttrace.engine.train import eval_sets_for
    task = pcfg.PCFGTask(GRAMMAR, "counter", holdout=0.1)
    eval_sets, test_sets = eval_sets_for(task, 256, 3), eval_sets_for(task, 256, 3, name="test")
    seen = {r.tobytes() for tokens, _ in eval_sets.values() for r in np.asarray(_data(task, tokens))}
    for name, (tokens, answers) in test_sets.items():
        data = np.asarray(_data(task, tokens))
        assert task.in_pool(data, "test").all() and not task.in_pool(data, "eval").any()
        assert task.is_heldout(data).all()
        assert not {r.tobytes() for r in data} & seen, name
        assert len({r.tobytes() for r in data}) >= (0.95 if name != "ft_shortcut" else 0.8) * len(data), name
        # Each sequence still carries what its set asks for: the answer is about its operand, the shortcut holds.
        np.testing.assert_array_equal(np.asarray(answers), np.asarray(task.labels(tokens)["pt" if name == "pt" else "ft"]))
        if name == "ft_shortcut":
            assert np.asarray(task.shortcut_holds(data)).all()
    # The eval sets are the plain draws of the eval pool, as every stopping rule reads them.
    for tokens, _ in eval_sets.values():
        assert task.in_pool(np.asarray(_data(task, tokens)), "eval").all()
    # The pools split the held-out share in two and leave the training strings alone.
    strings, _ = pcfg.sample_strings(GRAMMAR, jax.random.PRNGKey(10), 20000)
    strings = np.pad(np.asarray(strings), ((0, 0), (0, task.data_len - strings.shape[1])), constant_values=-1)
    pools = {name: task.in_pool(strings, name) for name in pcfg.POOLS}
    assert (sum(pools.values()) == 1).all()
    np.testing.assert_array_equal(pools["train"], ~task.is_heldout(strings))
    assert 0.02 < pools["test"].mean() < 0.08


def test_bad_task_configs_are_refused():
    with pytest.raises(ValueError, match="differ"):
        pcfg.PCFGTask(GRAMMAR, "counter", pt_operand=1, ft_operand=1)
    with pytest.raises(ValueError, match="data_len"):
        pcfg.PCFGTask(GRAMMAR, "counter", data_len=10)
    with pytest.raises(ValueError, match="other_operands"):
        pcfg.PCFGTask(GRAMMAR, "counter", other_operands=(2,))
    with pytest.raises(ValueError, match="control_operand"):
        pcfg.PCFGTask(GRAMMAR, "counter", other_operands=(3,), control_operand=3)
    with pytest.raises(ValueError, match="holdout"):
        pcfg.PCFGTask(GRAMMAR, "counter", holdout=1.0)
    with pytest.raises(ValueError, match="sum to 1"):
        pcfg.PCFGTask(pcfg.Grammar(((((0.5, (0,)),),),), 3), "counter", data_len=5)
