"""fttrace.open and a member's model: activations, interventions and export do what they say, on constructed
models; the README's notebook script runs as written on a study's workdir; bad requests are one clear error.
(Every member of a run read back as the run evaluated it, on 1 and 8 devices and 2 processes, and a merged
workdir: tests/test_survive.py.)"""
import logging
import re

import jax
import numpy as np
import pytest

import fttrace
from fttrace.errors import UserError
from fttrace.model.member import Ablation, MemberModel, Patch, load_export
from fttrace.model.transformer import ModelConfig, Transformer, init_params
from fttrace.engine.runner import run_study
from helpers import ROOT, tiny_config

CFG = ModelConfig(vocab_size=11, max_len=7, d_model=16, n_layers=2, n_heads=2, d_mlp=24)


@pytest.fixture(scope="module")
def model():
    params = jax.tree.map(np.asarray, init_params(CFG, jax.random.PRNGKey(0)))
    params = jax.tree.map(lambda x: x * 20, params)  # large weights: every unit matters to the logits
    return MemberModel(CFG, params, "m")


@pytest.fixture(scope="module")
def tokens():
    return np.asarray(jax.random.randint(jax.random.PRNGKey(1), (5, 7), 0, 11))


def with_leaf(params, path, edit):
    out = jax.tree.map(np.array, params)
    leaf = out
    for key in path[:-1]:
        leaf = leaf[key]
    leaf[path[-1]] = edit(leaf[path[-1]])
    return out


def test_run_with_cache_returns_the_forward_pass_and_its_activations(model, tokens):
    logits, cache = model.run_with_cache(tokens)
    direct = Transformer(CFG).apply({"params": model.params}, tokens)
    # Two programs, fused differently by XLA (and differently by each JAX release): logits of about 50 agree to
    # float32 rounding, a few 1e-4 apart.
    np.testing.assert_allclose(logits, direct, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.logits(tokens), logits, rtol=1e-6)
    assert cache["blocks.1.hook_resid_post"].shape == (5, 7, 16)
    assert cache["blocks.0.attn.hook_pattern"].shape == (5, 2, 7, 7)
    # The residual stream adds up: each block adds its attention and MLP outputs; heads add up to attention.
    np.testing.assert_allclose(cache["resid_post", 1] - cache["resid_pre", 1],
                               cache["attn_out", 1] + cache["mlp_out", 1], rtol=1e-4, atol=1e-4)
    bias = model.params["block_0"]["attn"]["out"]["bias"]
    np.testing.assert_allclose(cache["result", 0].sum(-2) + bias, cache["attn_out", 0], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(model.predict(tokens), logits[:, -1].argmax(-1))


def test_ablating_a_unit_equals_removing_its_weights(model, tokens):
    # Neuron 5 of layer 1 (flat index 24 + 5): its output weights zeroed.
    no_neuron = MemberModel(CFG, with_leaf(model.params, ("block_1", "mlp", "fc_out", "kernel"),
                                           lambda w: np.concatenate([w[:5], 0 * w[5:6], w[6:]])))
    expected = no_neuron.logits(tokens)
    assert not np.allclose(expected, model.logits(tokens), atol=1e-3)
    for unit in ((1, 5), 24 + 5):
        np.testing.assert_allclose(model.logits(tokens, ablate=Ablation(neurons=[unit])), expected, rtol=1e-5,
                                   atol=1e-5)
    # Head 1 of layer 0: its rows of the output projection zeroed.
    no_head = MemberModel(CFG, with_leaf(model.params, ("block_0", "attn", "out", "kernel"),
                                         lambda w: np.stack([w[0], 0 * w[1]])))
    np.testing.assert_allclose(model.logits(tokens, ablate=Ablation(heads=[(0, 1)])), no_head.logits(tokens),
                               rtol=1e-5, atol=1e-5)


def test_ablating_a_direction_removes_exactly_that_direction(model, tokens):
    u = np.asarray(jax.random.normal(jax.random.PRNGKey(2), (16,)))
    u = u / np.linalg.norm(u)
    _, before = model.run_with_cache(tokens)
    _, after = model.run_with_cache(tokens, ablate=Ablation(directions={1: u}))
    mid, upstream = "blocks.0.hook_resid_post", "blocks.0.hook_resid_pre"  # residual positions 1 and 0
    np.testing.assert_allclose(after[mid] @ u, 0, atol=1e-4)
    np.testing.assert_allclose(after[mid], before[mid] - np.outer(before[mid] @ u, u).reshape(before[mid].shape),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(after[upstream], before[upstream])  # upstream untouched


def test_patching_every_contribution_from_another_model_gives_its_logits(model, tokens):
    # Another model with the same embeddings, biases and norms, and other block matrices: with every head's and
    # MLP's contribution patched in from it, this model's residual stream is the other's, and so are its logits.
    other = MemberModel(CFG, jax.tree_util.tree_map_with_path(
        lambda path, x: x * 0.5 if path[0].key.startswith("block_") and path[-1].key == "kernel" else x,
        model.params))
    _, cache = other.run_with_cache(tokens)
    everything = Patch(cache, heads=[(layer, h) for layer in range(2) for h in range(2)], mlps=[0, 1])
    assert not np.allclose(other.logits(tokens), model.logits(tokens), atol=1e-2)
    np.testing.assert_allclose(model.logits(tokens, patch=everything), other.logits(tokens), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.logits(tokens, patch=Patch(cache)), model.logits(tokens), rtol=1e-5, atol=1e-5)


def test_export_round_trips(model, tokens, tmp_path):
    path = model.export(tmp_path / "m.npz")
    again = load_export(path)
    assert again.cfg == CFG and again.member == "m"
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.logits(tokens), model.logits(tokens))
    (tmp_path / "bad.npz").write_bytes(b"not an export")
    with pytest.raises(UserError, match="is not an fttrace member export"):
        load_export(tmp_path / "bad.npz")


@pytest.mark.parametrize("ablation, message", [
    (Ablation(neurons=[(2, 0)]), "neuron unit"), (Ablation(heads=[7]), "head unit"),
    (Ablation(directions={5: np.ones(16)}), "residual position 5"),
    (Ablation(directions={0: np.ones(3)}), "have width 3"),
])
def test_units_that_do_not_exist_are_refused(model, tokens, ablation, message):
    with pytest.raises(UserError, match=message):
        model.logits(tokens, ablate=ablation)


def notebook_script() -> str:
    """The README's notebook scripts (the Python blocks under "Open a run in a notebook"), one after the other."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Open a run in a notebook"):]
    section = section[:section.index("\n## ", 3)]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))


@pytest.mark.slow
def test_the_readme_notebook_script_runs_on_a_study(tmp_path, capsys, caplog):
    workdir = tmp_path / "run"
    run_study(tiny_config("sweep.seeds=2", "sweep.spurious=(0.0,)", "evals=('reft','prune')"), workdir, quiet=True)
    script = notebook_script()
    assert 'fttrace.open("runs/default")' in script
    capsys.readouterr()
    caplog.clear()
    exec(compile(script.replace("runs/default", str(workdir)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    # Reading checkpoints says nothing the user did not ask for (orbax warns of items it has no handler for).
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert re.search(r"C_PT [01]\.\d+ -> [01]\.\d+", printed) and re.search(r"C_FT [01]\.\d+ -> [01]\.\d+", printed)
    assert re.search(r"\['blocks\.0\.attn\.hook_pattern'\] \(64, 2, (\d+), \1\)", printed) and "'<ans>']" in printed
    run = fttrace.open(workdir)
    with pytest.raises(UserError, match="no member 'ft99'"):
        run.model("ft99")
    with pytest.raises(UserError, match="no checkpoint at step 3"):
        run.params("ft0", step=3)
    with pytest.raises(UserError, match="no pruning order of heads for member 'rft0'"):
        run.pruned_units("rft0", kind="heads")
    with pytest.raises(UserError, match="is not an fttrace workdir"):
        fttrace.open(tmp_path)
