"""RASP programs compiled by Tracr into the weights of fttrace's own Transformer.

Each program in `TRACR_PROGRAMS` is compiled with Tracr and its weights are copied, with numpy, into a params
pytree of exactly the shape `fttrace.model.transformer.init_params` gives for `CompiledProgram.model_config`, so the
training engine can fine-tune a compiled capability like any other member.

Layout mapping (Tracr's haiku model -> fttrace's `Transformer`, layer_norm=False, causal=False, relu):

    token_embed/embeddings [n_in, d]          -> embed/embedding [V, d]        (rows >= n_in are zero)
    pos_embed/embeddings [max_seq_len + 1, d] -> pos_embed [max_len, d]        (max_len = max_seq_len + 1)
    transformer/layer_i/attn/{query,key,value} w [d, H*hd], b [H*hd]
                                              -> block_i/attn/{query,key,value} kernel [d, H, hd], bias [H, hd]
    transformer/layer_i/attn/linear w [H*hd, d], b [d]
                                              -> block_i/attn/out kernel [H, hd, d], bias [d]
    transformer/layer_i/mlp/linear_1, linear_2 -> block_i/mlp/fc_in, fc_out
    (output space of the residual stream)     -> unembed/kernel [d, V]         (columns >= n_out are zero)

Tracr numbers its layers so that `layer_i` holds an attention sublayer followed by an MLP sublayer, exactly like
an fttrace block; where the compiled program needs only one of the two, Tracr leaves the other all zero (a zero
attention adds nothing to the residual stream, nor does a zero MLP), and so does the copy. Tracr pads every layer
to the largest head count and hidden size, with zero heads and neurons. Head size (`head_dim`) is Tracr's key size,
and both models scale attention logits by 1/sqrt(head_dim).

Ids: input ids are those of Tracr's input encoder (every vocabulary token, the BOS token and Tracr's pad token,
in sorted order); output ids are those of Tracr's output encoder, output id j meaning `output_values[j]`. Input
embedding and unembedding share `vocab_size = max(n_in, n_out)`; the rows and columns beyond each side's own ids
are zero, and decoding takes the argmax over the n_out output columns only. A model input is
[BOS, x_1 .. x_n] with n <= max_seq_len, and position t >= 1 gives the program's output for x_t.

Inverse temperature: Tracr writes every attention logit as `softmax_coldness` x (a 0/1 selection pattern, plus
the BOS term), with the coldness fixed at 100 inside its compiler (`SOFTMAX_COLDNESS`). The logits are linear in
the query weights, so `compile_program(..., softmax_coldness=c)` gives the model Tracr would compile at coldness
c by scaling every head's query kernel and bias by c / 100. At 100 an unselected token's attention weight is
e^-100, which float32 rounds to 0: no gradient reaches the choice of which tokens a head selects.

`components` tells which heads and MLP neurons each compiled RASP operation occupies, so that the change made by
fine-tuning can be measured per component (`component_params`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tracr.compiler import (basis_inference, craft_graph_to_model, craft_model_to_transformer, expr_to_craft_graph,
                            nodes, rasp_to_graph, validating)
from tracr.compiler.assemble import AssembledTransformerModel
from tracr.craft import bases, transformers
from tracr.rasp import rasp

from fttrace.model.transformer import ModelConfig, Transformer
from fttrace.answer.tasks.component import Component

BOS = "BOS"
PAD = "compiler_pad"
MLP_EXACTNESS = 100
SOFTMAX_COLDNESS = 100.0  # the inverse temperature Tracr's compiler gives every attention head


def make_counter(token: str = "a") -> rasp.SOp:
    """At every position, how many input tokens equal `token`."""
    is_token = rasp.Select(rasp.tokens, rasp.tokens, lambda key, query: key == token).named(f"select_{token}")
    return rasp.SelectorWidth(is_token).named(f"count_{token}")


def make_extremum_identifier(beats: rasp.Comparison, relation: str, extremum: str) -> rasp.SOp:
    """At every position, the input token that no other token `beats` (GT: the largest; LT: the smallest).

    Every position averages the tokens at the extremum, which are all equal (RASP's evaluator returns that mean
    as a float, 5.0 for 5, when there are several). Operations are named `n_<relation>`, `is_<extremum>`, ...
    """
    beaten_by = rasp.Select(rasp.tokens, rasp.tokens, beats).named(f"select_{relation}")
    n_beating = rasp.SelectorWidth(beaten_by).named(f"n_{relation}")
    is_extremum = rasp.Map(lambda n: n == 0, n_beating).named(f"is_{extremum}")
    at_extremum = rasp.Select(is_extremum, rasp.tokens, lambda key, query: key).named(f"select_{extremum}")
    return rasp.Aggregate(at_extremum, rasp.tokens).named(extremum)


def make_max_identifier() -> rasp.SOp:
    """At every position, the largest input token."""
    return make_extremum_identifier(rasp.Comparison.GT, "greater", "max")


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """How to build a RASP program and the input space it is compiled for."""
    build: Callable[[], rasp.SOp]
    vocab: frozenset
    max_seq_len: int


TRACR_PROGRAMS: dict[str, ProgramSpec] = {
    "counter": ProgramSpec(make_counter, frozenset("abcd"), 8),
    "max_identifier": ProgramSpec(make_max_identifier, frozenset(range(6)), 8),
}


@dataclasses.dataclass(frozen=True, eq=False)
class CompiledProgram:
    """A Tracr-compiled RASP program as fttrace params, with the tables to encode inputs and decode outputs."""
    name: str
    rasp: rasp.SOp
    vocab: frozenset
    max_seq_len: int
    params: dict  # float32 numpy leaves, the structure of fttrace.model.transformer.init_params(model_config, ...)
    model_config: ModelConfig
    token_ids: dict  # input token (vocab, BOS, PAD) -> input id
    output_values: tuple  # output id -> program output value
    components: tuple[Component, ...]
    residual_labels: tuple[str, ...]  # residual-stream dimension -> Tracr's basis direction
    tracr_model: AssembledTransformerModel  # the haiku model Tracr assembled (at coldness 100), for reference
    softmax_coldness: float = SOFTMAX_COLDNESS  # the heads' inverse temperature (module docstring)

    @property
    def bos_id(self) -> int:
        return self.token_ids[BOS]

    @property
    def pad_id(self) -> int:
        return self.token_ids[PAD]

    def encode(self, tokens: Sequence[Any]) -> list[int]:
        """Input ids of [BOS, *tokens]."""
        if len(tokens) > self.max_seq_len:
            raise ValueError(f"{self.name}: {len(tokens)} tokens, at most {self.max_seq_len} fit")
        unknown = [t for t in tokens if t not in self.vocab]
        if unknown:
            raise ValueError(f"{self.name}: tokens {unknown} are not in the vocabulary {sorted(self.vocab)}")
        return [self.bos_id] + [self.token_ids[t] for t in tokens]

    def outputs(self, ids) -> np.ndarray:
        """The program's output values [B, T - 1] at every input position of encoded inputs `ids` [B, T] (each
        [BOS, x_1 .. x_n], equal lengths), computed by fttrace's Transformer."""
        logits = np.asarray(_forward(self.model_config)(self.params, jnp.asarray(ids, jnp.int32)))
        return np.asarray(self.output_values)[logits[:, 1:, :len(self.output_values)].argmax(-1)]

    def predict(self, tokens: Sequence[Any]) -> list:
        """The program's output at every input position, computed by fttrace's Transformer."""
        return self.outputs([self.encode(tokens)])[0].tolist()


@functools.lru_cache(maxsize=None)
def _forward(cfg: ModelConfig):
    return jax.jit(lambda params, ids: Transformer(cfg).apply({"params": params}, ids))


def compile_program(name: str, softmax_coldness: float = SOFTMAX_COLDNESS) -> CompiledProgram:
    """Compile the program `name` of `TRACR_PROGRAMS` and convert its weights to fttrace params, every attention
    head at the inverse temperature `softmax_coldness` (module docstring). A coldness too low for the program
    compiles a model that errs; `tracr_task.compiled` checks it."""
    if name not in TRACR_PROGRAMS:
        raise ValueError(f"unknown Tracr program {name!r}; choose one of: {', '.join(sorted(TRACR_PROGRAMS))}")
    if isinstance(softmax_coldness, bool) or not isinstance(softmax_coldness, (int, float)) or not softmax_coldness > 0:
        raise ValueError(f"softmax_coldness must be positive, not {softmax_coldness!r}")
    spec = TRACR_PROGRAMS[name]
    program = spec.build()
    if not rasp.is_categorical(program):
        raise ValueError(f"{name}: the program's output must be categorical to be read by an argmax")
    assembled, graph, craft_model = _compile(program, spec.vocab, spec.max_seq_len)

    token_ids = dict(assembled.input_encoder.encoding_map)
    output_ids = assembled.output_encoder.encoding_map
    output_values = tuple(sorted(output_ids, key=output_ids.get))
    assert [output_ids[v] for v in output_values] == list(range(len(output_values)))

    hk = {module: {k: np.asarray(v, np.float32) for k, v in weights.items()}
          for module, weights in assembled.params.items()}
    tc = assembled.model_config
    labels = tuple(assembled.residual_labels)
    cfg = ModelConfig(
        vocab_size=max(len(token_ids), len(output_values)), max_len=spec.max_seq_len + 1, d_model=len(labels),
        n_layers=tc.num_layers, n_heads=tc.num_heads, head_dim=tc.key_size, d_mlp=tc.mlp_hidden_size,
        layer_norm=False, causal=False, activation="relu", use_bias=True, dtype="float32")

    unembed = np.zeros((cfg.d_model, cfg.vocab_size), np.float32)
    for output_id, value in enumerate(output_values):
        unembed[labels.index(str(bases.BasisDirection(program.label, value))), output_id] = 1.0

    return CompiledProgram(
        name=name, rasp=program, vocab=spec.vocab, max_seq_len=spec.max_seq_len,
        params=_fttrace_params(hk, cfg, unembed, softmax_coldness / SOFTMAX_COLDNESS), model_config=cfg,
        token_ids=token_ids, output_values=output_values, components=_components(graph, craft_model),
        residual_labels=labels, tracr_model=assembled, softmax_coldness=float(softmax_coldness))


def _compile(program: rasp.SOp, vocab: frozenset, max_seq_len: int):
    """The steps of `tracr.compiler.compiling.compile_rasp_to_model`, keeping the graph and craft model, which
    tell what each compiled block computes."""
    unsupported = validating.static_validate(program)
    if unsupported:
        raise ValueError("Tracr cannot compile: " + "; ".join(
            f"{u.expr.name}: {u.reason}" for u in unsupported))
    extracted = rasp_to_graph.extract_rasp_graph(program)
    graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
    basis_inference.infer_bases(graph, sink, set(vocab), max_seq_len)
    expr_to_craft_graph.add_craft_components_to_rasp_graph(
        graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=MLP_EXACTNESS)
    craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
    assembled = craft_model_to_transformer.craft_model_to_transformer(
        craft_model=craft_model, graph=graph, sink=sink, max_seq_len=max_seq_len, causal=False,
        compiler_bos=BOS, compiler_pad=PAD)
    return assembled, graph, craft_model


def _fttrace_params(hk: dict, cfg: ModelConfig, unembed: np.ndarray, query_scale: float) -> dict:
    """Tracr's weights in fttrace's layout, every head's query kernel and bias times `query_scale`."""
    d, h, hd = cfg.d_model, cfg.n_heads, cfg.hd
    embedding = np.zeros((cfg.vocab_size, d), np.float32)
    token_embed = hk["token_embed"]["embeddings"]
    embedding[:len(token_embed)] = token_embed
    params = {"embed": {"embedding": embedding}, "pos_embed": hk["pos_embed"]["embeddings"].copy(),
              "unembed": {"kernel": unembed}}
    for i in range(cfg.n_layers):
        attn = {name: hk[f"transformer/layer_{i}/attn/{name}"] for name in ("query", "key", "value")}
        attn["query"] = {k: np.float32(query_scale) * w for k, w in attn["query"].items()}
        out = hk[f"transformer/layer_{i}/attn/linear"]
        fc_in, fc_out = (hk[f"transformer/layer_{i}/mlp/{name}"] for name in ("linear_1", "linear_2"))
        params[f"block_{i}"] = {
            "attn": {**{name: {"kernel": w["w"].reshape(d, h, hd), "bias": w["b"].reshape(h, hd)}
                        for name, w in attn.items()},
                     "out": {"kernel": out["w"].reshape(h, hd, d), "bias": out["b"].copy()}},
            "mlp": {"fc_in": {"kernel": fc_in["w"].copy(), "bias": fc_in["b"].copy()},
                    "fc_out": {"kernel": fc_out["w"].copy(), "bias": fc_out["b"].copy()}},
        }
    return params


def _sublayers(craft_model: transformers.SeriesWithResiduals):
    """(block index, craft block) in model order, placed the way Tracr's assembler places them: each block in the
    next free sublayer of its kind, in the order attention 0, MLP 0, attention 1, MLP 1, ..."""
    sublayer = 0  # even: attention of block sublayer // 2, odd: its MLP
    for block in craft_model.blocks:
        if sublayer % 2 != isinstance(block, transformers.MLP):
            sublayer += 1
        yield sublayer // 2, block
        sublayer += 1


def _components(graph, craft_model: transformers.SeriesWithResiduals) -> tuple[Component, ...]:
    head_owner, neuron_owner = {}, {}  # id(attention head) / MLP hidden basis direction -> node label
    for label, node in graph.nodes.items():
        block = node.get(nodes.MODEL_BLOCK)
        if block is None:
            continue
        for part in block.blocks if isinstance(block, transformers.SeriesWithResiduals) else [block]:
            if isinstance(part, transformers.MLP):
                neuron_owner.update((direction, label) for direction in part.fst.output_space.basis)
            else:
                head_owner.update((id(head), label) for head in part.as_multi().heads())

    found = []
    for index, block in _sublayers(craft_model):
        if isinstance(block, transformers.MLP):
            owners = [neuron_owner[direction] for direction in block.fst.output_space.basis]
        else:
            owners = [head_owner[id(head)] for head in block.as_multi().heads()]
        for label in dict.fromkeys(owners):
            units = tuple(i for i, owner in enumerate(owners) if owner == label)
            name = graph.nodes[label][nodes.EXPR].name
            if isinstance(block, transformers.MLP):
                found.append(Component(name, "mlp", index, None, units))
            else:
                found.append(Component(name, "attn", index, units, None))
    return tuple(found)


def components(program: CompiledProgram) -> list[Component]:
    """Each compiled RASP operation with the block, and heads or MLP neurons, it occupies, in model order."""
    return list(program.components)
