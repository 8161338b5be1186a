"""Tracr-compiled programs run by fttrace's Transformer agree with RASP and with Tracr's own haiku model."""
import functools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tracr.compiler import compiling
from tracr.craft.chamber import categorical_attn
from tracr.rasp import rasp

from fttrace.model.transformer import Transformer, full_masks, init_params
from fttrace.answer.tasks.component import Component, component_params
from fttrace.answer.tasks.programs import BOS, MLP_EXACTNESS, TRACR_PROGRAMS, compile_program, components

NAMES = sorted(TRACR_PROGRAMS)
INPUTS_PER_LENGTH = 20

EXPECTED_COMPONENTS = {
    "counter": [("count_a", "attn", 0), ("count_a", "mlp", 0)],
    "max_identifier": [("n_greater", "attn", 0), ("n_greater", "mlp", 0), ("is_max", "mlp", 1),
                       ("max", "attn", 2)],
}


@pytest.fixture(scope="module")
def compiled():
    return {name: compile_program(name) for name in NAMES}


def sample_inputs(program, seed=0):
    """Seeded random inputs of every length, plus each token repeated to every length."""
    rng = random.Random(seed)
    vocab = sorted(program.vocab)
    inputs = [[rng.choice(vocab) for _ in range(n)]
              for n in range(1, program.max_seq_len + 1) for _ in range(INPUTS_PER_LENGTH)]
    inputs += [[token] * n for token in vocab for n in range(1, program.max_seq_len + 1)]
    return inputs


@pytest.fixture(scope="module")
def predictions(compiled):
    return {name: [(x, program.predict(x)) for x in sample_inputs(program)] for name, program in compiled.items()}


@pytest.mark.parametrize("name", NAMES)
def test_predict_equals_rasp_evaluate(compiled, predictions, name):
    program = compiled[name]
    cases = predictions[name]
    assert {len(x) for x, _ in cases} == set(range(1, program.max_seq_len + 1))
    for x, predicted in cases:
        assert len(predicted) == len(x)
        assert predicted == rasp.evaluate(program.rasp, x), x
    # the sample exercises several different answers
    assert len({value for _, predicted in cases for value in predicted}) >= 4


def test_max_identifier_outputs_the_maximum(compiled):
    assert compiled["max_identifier"].predict([3, 1, 4, 1, 5, 2]) == [5] * 6
    assert compiled["counter"].predict(list("abacad")) == [3] * 6


def haiku_decoded(program, batch):
    """Tracr's own model on [BOS, *x] for equal-length inputs x, decoded by its output encoder, and its output."""
    model = program.tracr_model
    ids = jnp.asarray([model.input_encoder.encode([BOS, *x]) for x in batch])
    out = jax.jit(model.forward)(model.params, ids)
    return [model.output_encoder.decode(row[1:].tolist()) for row in np.asarray(out.unembedded_output)], out


def fttrace_forward(program, batch, masks=None):
    """fttrace's Transformer on [BOS, *x] for equal-length inputs x: logits and captured intermediates."""
    cfg = program.model_config
    ids = jnp.asarray([program.encode(x) for x in batch])
    return _captured_forward(cfg)(program.params, ids, full_masks(cfg) if masks is None else masks)


@functools.lru_cache(maxsize=None)
def _captured_forward(cfg):
    return jax.jit(lambda params, ids, masks: Transformer(cfg).apply({"params": params}, ids, masks=masks,
                                                                     capture=True))


def by_length(cases):
    grouped = {}
    for x, predicted in cases:
        grouped.setdefault(len(x), []).append((x, predicted))
    return grouped


@pytest.mark.parametrize("name", NAMES)
def test_matches_haiku_model(compiled, predictions, name):
    program = compiled[name]
    for length, cases in by_length(predictions[name]).items():
        decoded, out = haiku_decoded(program, [x for x, _ in cases])
        assert decoded == [predicted for _, predicted in cases]
        if length in (1, program.max_seq_len):
            # the residual stream after every block equals Tracr's after the same layer's MLP
            _, captured = fttrace_forward(program, [x for x, _ in cases])
            np.testing.assert_allclose(captured["residual"][0], out.transformer_output.input_embeddings,
                                       atol=1e-5)
            for block in range(program.model_config.n_layers):
                np.testing.assert_allclose(captured["residual"][block + 1],
                                           out.transformer_output.residuals[2 * block + 1], atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_compilation_steps_equal_compile_rasp_to_model(compiled, name):
    program = compiled[name]
    reference = compiling.compile_rasp_to_model(program.rasp, vocab=set(program.vocab),
                                                max_seq_len=program.max_seq_len, compiler_bos=BOS,
                                                mlp_exactness=MLP_EXACTNESS)
    assert list(reference.residual_labels) == list(program.residual_labels)
    assert reference.params.keys() == program.tracr_model.params.keys()
    for module, weights in reference.params.items():
        for leaf, value in weights.items():
            np.testing.assert_array_equal(value, program.tracr_model.params[module][leaf], err_msg=module)


@pytest.mark.parametrize("name", NAMES)
def test_softmax_coldness_gives_the_model_tracr_compiles_at_that_coldness(compiled, predictions, monkeypatch, name):
    """Compiling at coldness 10 equals Tracr's own compiler with every head's coldness forced to 10 (its residual
    stream after every block), and differs from coldness 100 only in the query weights."""
    cold = compile_program(name, softmax_coldness=10.0)
    for block in range(cold.model_config.n_layers):
        for leaf in ("kernel", "bias"):
            np.testing.assert_allclose(cold.params[f"block_{block}"]["attn"]["query"][leaf],
                                       0.1 * compiled[name].params[f"block_{block}"]["attn"]["query"][leaf],
                                       rtol=1e-6)
    strip = lambda p: jax.tree_util.tree_map_with_path(  # noqa: E731
        lambda path, leaf: None if "query" in jax.tree_util.keystr(path) else leaf, p)
    jax.tree_util.tree_map(np.testing.assert_array_equal, strip(cold.params), strip(compiled[name].params))

    forced = categorical_attn.categorical_attn
    monkeypatch.setattr(categorical_attn, "categorical_attn",
                        lambda *args, **kwargs: forced(*args, **{**kwargs, "softmax_coldness": 10.0}))
    reference = compiling.compile_rasp_to_model(cold.rasp, vocab=set(cold.vocab), max_seq_len=cold.max_seq_len,
                                                compiler_bos=BOS, mlp_exactness=MLP_EXACTNESS)
    batch = [x for x, _ in by_length(predictions[name])[cold.max_seq_len]]
    out = jax.jit(reference.forward)(reference.params,
                                     jnp.asarray([reference.input_encoder.encode([BOS, *x]) for x in batch]))
    _, captured = fttrace_forward(cold, batch)
    for block in range(cold.model_config.n_layers):
        np.testing.assert_allclose(captured["residual"][block + 1], out.transformer_output.residuals[2 * block + 1],
                                   atol=1e-3)
    # the forced compile did change the logits: at coldness 10 a head leaks weight to unselected tokens
    assert not np.allclose(captured["residual"][1], fttrace_forward(compiled[name], batch)[1]["residual"][1],
                           atol=1e-3)


def test_softmax_coldness_must_be_positive():
    with pytest.raises(ValueError, match="softmax_coldness must be positive"):
        compile_program("counter", softmax_coldness=0.0)


@pytest.mark.parametrize("name", NAMES)
def test_params_have_init_params_structure(compiled, name):
    program = compiled[name]
    cfg = program.model_config
    assert (cfg.activation, cfg.layer_norm, cfg.causal, cfg.use_bias, cfg.dtype) == (
        "relu", False, False, True, "float32")
    fresh = jax.eval_shape(functools.partial(init_params, cfg), jax.random.PRNGKey(0))
    assert jax.tree_util.tree_structure(program.params) == jax.tree_util.tree_structure(fresh)
    shapes = lambda tree: jax.tree_util.tree_map(lambda a: (a.shape, np.dtype(a.dtype)), tree)  # noqa: E731
    assert shapes(program.params) == shapes(fresh)
    assert cfg.vocab_size == max(len(program.token_ids), len(program.output_values))
    assert cfg.max_len == program.max_seq_len + 1
    assert cfg.d_model == len(program.residual_labels) <= 100


def leaf_ids(params):
    """A tree shaped like `params` whose entries are (leaf number, flat index) codes, unique over the tree."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    coded = [(np.arange(leaf.size).reshape(leaf.shape) + 1) * 1000 + number for number, leaf in enumerate(leaves)]
    return jax.tree_util.tree_unflatten(treedef, coded)


@pytest.mark.parametrize("name", NAMES)
def test_components_cover_compiled_weights(compiled, name):
    program = compiled[name]
    found = components(program)
    assert all(isinstance(c, Component) for c in found)
    assert [(c.name, c.kind, c.block) for c in found] == EXPECTED_COMPONENTS[name]
    for c in found:
        assert (c.heads is None) == (c.kind == "mlp") and (c.neurons is None) == (c.kind == "attn")

    blocks = {k: v for k, v in program.params.items() if k.startswith("block_")}
    ids = leaf_ids(blocks)
    owned = np.concatenate([np.ravel(v) for c in found for v in component_params(ids, c).values()])
    assert len(owned) == len(set(owned.tolist())), "a weight belongs to two components"
    nonzero = np.concatenate([ids_leaf[leaf != 0] for ids_leaf, leaf in
                              zip(jax.tree_util.tree_leaves(ids), jax.tree_util.tree_leaves(blocks))])
    assert len(nonzero) > 0
    assert set(nonzero.tolist()) <= set(owned.tolist()), "a compiled weight belongs to no component"
    for c in found:
        assert any(np.any(v != 0) for v in component_params(program.params, c).values()), c


@pytest.mark.parametrize("name", NAMES)
def test_masking_a_component_breaks_the_program(compiled, predictions, name):
    program = compiled[name]
    cfg = program.model_config
    cases = by_length(predictions[name])[program.max_seq_len]
    batch, expected = [x for x, _ in cases], [predicted for _, predicted in cases]
    for c in components(program):
        masks = full_masks(cfg)
        if c.kind == "attn":
            masks["heads"] = masks["heads"].at[c.block, list(c.heads)].set(0)
        else:
            masks["neurons"] = masks["neurons"].at[c.block, list(c.neurons)].set(0)
        logits, _ = fttrace_forward(program, batch, masks)
        output_ids = np.asarray(logits)[:, 1:, :len(program.output_values)].argmax(-1)
        assert [[program.output_values[i] for i in row] for row in output_ids] != expected, c


def test_unknown_program_names_the_choices():
    with pytest.raises(ValueError, match="'sort'.*counter, max_identifier"):
        compile_program("sort")


def test_predict_rejects_bad_inputs(compiled):
    program = compiled["counter"]
    with pytest.raises(ValueError, match="not in the vocabulary"):
        program.predict(["a", "z"])
    with pytest.raises(ValueError, match="at most 8"):
        program.predict(["a"] * 9)
