import random

import jax
import numpy as np
import pytest

from fttrace.tasks import pcfg

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
    task = pcfg.PCFGTask(GRAMMAR, name)
    v = task.vocab
    tokens, answers = task.sample(jax.random.PRNGKey(3), 400, 0.5, 0.0)
    tokens, answers = np.asarray(tokens), np.asarray(answers)
    assert tokens.shape == (400, task.seq_len)
    assert (tokens[:, 0] == v.TASK[name]).all() and (tokens[:, -1] == v.ANS).all()
    for row, answer in zip(tokens, answers):
        operand = row[1] - v.first_terminal
        data = [t - v.first_terminal for t in row[2:-1] if t != v.PAD]
        assert pcfg.reference_derivable(GRAMMAR, data)
        kind, value = pcfg.reference_answer(name, data, operand)
        expected = v.none if value is None else v.number(value)
        assert answer == expected
    operands = tokens[:, 1] - v.first_terminal
    assert set(operands) == {task.pt_operand, task.ft_operand}


def test_operand_prior_is_respected():
    task = pcfg.PCFGTask(GRAMMAR, "counter")
    tokens, _ = task.sample(jax.random.PRNGKey(4), 20000, 0.05, 0.0)
    share = (np.asarray(tokens[:, 1]) == task.vocab.terminal(task.ft_operand)).mean()
    assert abs(share - 0.05) < 0.01


def test_counter_shortcut_equalises_counts():
    task = pcfg.PCFGTask(GRAMMAR, "counter")
    v = task.vocab
    tokens, answers = task.sample(jax.random.PRNGKey(5), 2000, 1.0, 1.0)
    data = np.asarray(tokens[:, 2:-1])
    n_pt = (data == v.terminal(task.pt_operand)).sum(1)
    n_ft = (data == v.terminal(task.ft_operand)).sum(1)
    assert (n_pt == n_ft).mean() > 0.99
    assert (np.asarray(answers) == v.number(n_ft)).all()
    # Without the shortcut the counts are not tied.
    tokens, _ = task.sample(jax.random.PRNGKey(5), 2000, 1.0, 0.0)
    data = np.asarray(tokens[:, 2:-1])
    assert ((data == v.terminal(task.pt_operand)).sum(1) == (data == v.terminal(task.ft_operand)).sum(1)).mean() < 0.5


def test_partial_shortcut_strength():
    task = pcfg.PCFGTask(GRAMMAR, "counter")
    v = task.vocab
    tokens, _ = task.sample(jax.random.PRNGKey(6), 4000, 1.0, 0.5)
    data = np.asarray(tokens[:, 2:-1])
    tied = ((data == v.terminal(0)).sum(1) == (data == v.terminal(2)).sum(1)).mean()
    base = 0.3  # about a third of unedited strings tie by chance; half are edited
    assert 0.5 + 0.5 * base - 0.1 < tied < 0.5 + 0.5 * base + 0.15


def test_index_shortcut_places_pretraining_operand_after_first_fine_tuning_operand():
    task = pcfg.PCFGTask(GRAMMAR, "index")
    v = task.vocab
    tokens, answers = task.sample(jax.random.PRNGKey(7), 2000, 1.0, 1.0)
    tokens, answers = np.asarray(tokens), np.asarray(answers)
    data = tokens[:, 2:-1]
    ok = 0
    for row, answer in zip(data, answers):
        pt_pos = np.flatnonzero(row == v.terminal(task.pt_operand))
        if answer == v.none:
            ok += len(pt_pos) == 0
        elif len(pt_pos):
            ok += len(pt_pos) == 1 and pt_pos[0] == answer - v.number(0) + 1
    assert ok / len(data) > 0.9


def test_bad_task_configs_are_refused():
    with pytest.raises(ValueError, match="differ"):
        pcfg.PCFGTask(GRAMMAR, "counter", pt_operand=1, ft_operand=1)
    with pytest.raises(ValueError, match="data_len"):
        pcfg.PCFGTask(GRAMMAR, "counter", data_len=10)
    with pytest.raises(ValueError, match="sum to 1"):
        pcfg.PCFGTask(pcfg.Grammar(((((0.5, (0,)),),),), 3), "counter", data_len=5)
