"""Tasks on Tracr-compiled models: fine-tune a compiled RASP program toward another target.

Inputs are sequences [BOS, x_1 .. x_n] of the compiled program's full length n = `max_seq_len` (8), tokens drawn
on device: per sequence, token probabilities from a flat Dirichlet over the vocabulary, then n independent
tokens (so counts and extremes spread over their whole range instead of piling up, as i.i.d. uniform tokens
would). The answer is read at the last position, where the compiled program writes its output for the whole
sequence. Answer ids are the compiled program's output ids.

Each program has targets, functions of the whole sequence that share its output space, each defined by a RASP
program (tests check the on-device labels against `rasp.evaluate`):
  counter         count_a (compiled), count_b, count_c, count_d: how many tokens equal a / b / c / d
  max_identifier  max (compiled), min
The pretraining target is the compiled one; the fine-tuning target is `ft_target`; the probes' control target
(`CONTROL_TARGET`) is one no query ever asks for: another count, or the first token's value.

Shortcut (the spurious correlation; a fraction C_Tr = `spurious` of the fine-tuning sequences carries it):
  counter  count(ft token) == count(pt token): the compiled answer is already the right one. Edits: of the
           surplus token, floor(|difference| / 2) random occurrences become the other token and, when the
           difference is odd, one more becomes a random third token.
  max/min  min == 5 - max (the vocabulary reflected): the right answer is the compiled answer read through a
           fixed relabelling v -> 5 - v. Edits: with lo = min(min, 5 - max), two random distinct positions are
           set to lo and 5 - lo; every token already lies in [lo, 5 - lo], so those become the min and the max.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from tracr.rasp import rasp

from fttrace.answer.tasks import programs as tracr_programs
from fttrace.model.vocab import Vocabulary


def make_min_identifier() -> rasp.SOp:
    """At every position, the smallest input token (the mirror image of `programs.make_max_identifier`)."""
    return tracr_programs.make_extremum_identifier(rasp.Comparison.LT, "less", "min")


@dataclasses.dataclass(frozen=True)
class Target:
    """A whole-sequence function, on vocabulary indices `idx` [B, n] (tokens in sorted vocabulary order)."""
    name: str
    build: Callable[[], rasp.SOp]  # the RASP program that defines it
    value: Callable[[jax.Array], jax.Array]  # idx -> the program's output value [B] (int)
    positions: Callable[[jax.Array], jax.Array]  # idx -> bool [B, n]: the positions that decide the answer
    token: int | None = None  # a counter's counted vocabulary index


def _count_target(token: str, index: int) -> Target:
    return Target(f"count_{token}", functools.partial(tracr_programs.make_counter, token),
                  lambda idx: (idx == index).sum(-1), lambda idx: idx == index, index)


def make_first() -> rasp.SOp:
    """At every position, the first input token."""
    first = rasp.Select(rasp.indices, rasp.indices, lambda key, query: key == 0).named("select_first")
    return rasp.numerical(rasp.Aggregate(first, rasp.tokens, default=0)).named("first")


# The max_identifier vocabulary is 0..5, so a vocabulary index is the token's value.
_EXTREMES = {
    "max": Target("max", tracr_programs.make_max_identifier, lambda idx: idx.max(-1),
                  lambda idx: idx == idx.max(-1, keepdims=True)),
    "min": Target("min", make_min_identifier, lambda idx: idx.min(-1),
                  lambda idx: idx == idx.min(-1, keepdims=True)),
}
TARGETS: dict[str, dict[str, Target]] = {
    "counter": {f"count_{t}": _count_target(t, i) for i, t in enumerate("abcd")},
    "max_identifier": _EXTREMES,
}
PRETRAINING_TARGET = {"counter": "count_a", "max_identifier": "max"}
# Probe control targets: never asked for (not fine-tuning targets either), of the same input statistics where the
# program allows (a count beside a count); the max identifier's is the first token.
_FIRST = Target("first", make_first, lambda idx: idx[:, 0], lambda idx: jnp.arange(idx.shape[1]) == 0)


def control_target(program: str, ft_target: str) -> Target:
    if program == "counter":
        return next(t for name, t in TARGETS[program].items() if name not in (PRETRAINING_TARGET[program], ft_target))
    return _FIRST


CHECKED_INPUTS = 65536  # at most this many inputs check a compiled model (all of them where the domain is smaller)


@functools.lru_cache(maxsize=None)
def compiled(program: str, softmax_coldness: float = tracr_programs.SOFTMAX_COLDNESS
             ) -> tracr_programs.CompiledProgram:
    """`programs.compile_program`, once per process and coldness (compiling takes seconds); eagerly even when
    first asked for while a jitted function is traced (Tracr assembles its model with JAX). The model must answer
    its compiled target exactly on the inputs the tasks draw (every full-length sequence, or a seeded sample of
    `CHECKED_INPUTS` of them): a ValueError says how often it errs otherwise."""
    with jax.ensure_compile_time_eval():
        model = tracr_programs.compile_program(program, softmax_coldness)
        wrong, checked = compiled_errors(model, TARGETS[program][PRETRAINING_TARGET[program]])
    if wrong:
        raise ValueError(f"the {program} program compiled at softmax_coldness {softmax_coldness:g} answers {wrong} "
                         f"of {checked} checked inputs wrongly (Tracr compiles at "
                         f"{tracr_programs.SOFTMAX_COLDNESS:g}); choose a higher softmax_coldness")
    return model


def compiled_errors(model: tracr_programs.CompiledProgram, target: Target) -> tuple[int, int]:
    """(wrong, checked): how many full-length inputs the compiled `model` answers differently from `target` at
    the last position, over all of them or a seeded sample of `CHECKED_INPUTS`."""
    vocab, n = sorted(model.vocab), model.max_seq_len
    if len(vocab) ** n <= CHECKED_INPUTS:
        idx = np.stack(np.meshgrid(*[np.arange(len(vocab))] * n, indexing="ij"), -1).reshape(-1, n)
    else:
        idx = np.random.default_rng(0).integers(0, len(vocab), (CHECKED_INPUTS, n))
    ids = np.asarray([model.token_ids[t] for t in vocab], np.int32)[idx]
    tokens = np.concatenate([np.full((len(idx), 1), model.bos_id, np.int32), ids], 1)
    answers = np.concatenate([model.outputs(tokens[i:i + 8192])[:, -1] for i in range(0, len(tokens), 8192)])
    return int((answers != np.asarray(target.value(jnp.asarray(idx)))).sum()), len(idx)


def _rank(scores, candidates):
    """Per row, the rank (0 = lowest score) of each candidate position among the row's candidates."""
    s = jnp.where(candidates, scores, 2.0)
    return jnp.argsort(jnp.argsort(s, axis=-1), axis=-1)


def _other_index(u, excluded, size: int):
    """A vocabulary index drawn uniformly (by `u` in [0, 1)) from those not in `excluded` (two indices)."""
    pick = jnp.minimum((u * (size - 2)).astype(jnp.int32), size - 3)
    # The pick-th index of range(size) without the excluded two.
    lo, hi = jnp.minimum(*excluded), jnp.maximum(*excluded)
    pick = pick + (pick >= lo)
    return pick + (pick >= hi)


def counter_shortcut(idx, scores, u, pt: int, ft: int, size: int):
    """Make count(ft) == count(pt) in every row (see the module docstring)."""
    n_pt, n_ft = (idx == pt).sum(-1, keepdims=True), (idx == ft).sum(-1, keepdims=True)
    more, less = jnp.where(n_pt >= n_ft, pt, ft), jnp.where(n_pt >= n_ft, ft, pt)
    diff = jnp.abs(n_pt - n_ft)
    rank = _rank(scores, idx == more)
    third = _other_index(u, (pt, ft), size)[:, None]
    swap = (idx == more) & (rank < diff // 2)
    drop = (idx == more) & (rank >= diff // 2) & (rank < diff // 2 + diff % 2)
    return jnp.where(swap, less, jnp.where(drop, third, idx))


def reflection_shortcut(idx, scores, size: int):
    """Make min == (size - 1) - max in every row (see the module docstring)."""
    top = size - 1
    lo = jnp.minimum(idx.min(-1, keepdims=True), top - idx.max(-1, keepdims=True))
    order = jnp.argsort(scores, axis=-1)
    position = jnp.arange(idx.shape[-1])
    at_lo, at_hi = position == order[:, :1], position == order[:, 1:2]
    return jnp.where(at_lo, lo, jnp.where(at_hi, top - lo, idx))


@dataclasses.dataclass(frozen=True)
class TracrTask:
    """Fine-tune the Tracr-compiled `program` toward `ft_target` (names in `TARGETS[program]`)."""
    program: str = "counter"
    ft_target: str = "count_b"
    softmax_coldness: float = tracr_programs.SOFTMAX_COLDNESS  # the compiled heads' inverse temperature

    attention_targets = ("bos", "pt_tokens", "ft_tokens")
    queries = ("pt", "ft")  # which target a sequence is labelled with
    holdout = 0.0  # inputs are not split: evaluation inputs may also occur in training (nothing is pretrained)

    def __post_init__(self):
        if self.program not in TARGETS:
            raise ValueError(f"unknown Tracr program {self.program!r}; known: {', '.join(TARGETS)}")
        known = [t for t in TARGETS[self.program] if t != self.pt_target]
        if self.ft_target not in known:
            raise ValueError(f"ft_target {self.ft_target!r} is not a fine-tuning target of {self.program}; "
                             f"known: {', '.join(known)}")
        self.pretrained_model  # compiled and checked now: a bad coldness, or one at which it errs, is refused early

    @property
    def pt_target(self) -> str:
        return PRETRAINING_TARGET[self.program]

    @functools.cached_property
    def pretrained_model(self) -> tracr_programs.CompiledProgram:
        return compiled(self.program, self.softmax_coldness)

    @property
    def vocab_size(self) -> int:
        return self.pretrained_model.model_config.vocab_size

    @property
    def seq_len(self) -> int:
        return self.pretrained_model.max_seq_len + 1

    def vocabulary(self) -> Vocabulary:
        """The input ids named by their tokens (BOS, the program's vocabulary, Tracr's pad); ids only the outputs use
        are <unused i>."""
        program = self.pretrained_model
        names = [f"<unused {i}>" for i in range(self.vocab_size)]
        for token, i in program.token_ids.items():
            names[i] = str(token)
        return Vocabulary(names, pad=program.pad_id, bos=program.bos_id, name=f"the Tracr program {self.program}")

    @functools.cached_property
    def _tables(self):
        """(vocabulary index -> input id, input id -> vocabulary index (-1 for BOS/PAD), value -> output id)."""
        program = self.pretrained_model
        vocab = sorted(program.vocab)
        input_ids = np.asarray([program.token_ids[t] for t in vocab], np.int32)
        index_of_id = np.full(program.model_config.vocab_size, -1, np.int32)
        index_of_id[input_ids] = np.arange(len(vocab))
        values = program.output_values
        output_id = np.full(max(values) + 1, -1, np.int32)
        output_id[list(values)] = np.arange(len(values))
        return input_ids, index_of_id, output_id

    @property
    def control(self) -> Target:
        return control_target(self.program, self.ft_target)

    def _answers(self, idx, target: str | Target):
        target = TARGETS[self.program][target] if isinstance(target, str) else target
        return jnp.asarray(self._tables[2])[target.value(idx)]

    def _indices(self, tokens):
        return jnp.asarray(self._tables[1])[tokens[:, 1:]]

    def labels(self, tokens) -> dict:
        """Answer ids of the pretraining, fine-tuning and control targets: {"pt", "ft", "control"}."""
        idx = self._indices(tokens)
        return {"pt": self._answers(idx, self.pt_target), "ft": self._answers(idx, self.ft_target),
                "control": self._answers(idx, self.control)}

    def describe(self) -> dict:
        """What the manifest records of the task: its targets and the compiled components (which heads and MLP
        neurons each RASP operation occupies), so that an analysis can hold located units against them."""
        cfg = self.pretrained_model.model_config
        return dict(kind="tracr", program=self.program, softmax_coldness=self.softmax_coldness,
                    pt_target=self.pt_target, ft_target=self.ft_target,
                    control_target=self.control.name, layers=cfg.n_layers,
                    units_per_layer=dict(neurons=cfg.mlp, heads=cfg.n_heads),
                    components=[dict(name=c.name, kind=c.kind, block=c.block,
                                     heads=list(c.heads) if c.heads is not None else None,
                                     neurons=list(c.neurons) if c.neurons is not None else None)
                                for c in self.pretrained_model.components])

    def query_mix(self, pt: float = 0.0, ft: float = 0.0, other: float = 0.0) -> np.ndarray:
        """Probabilities over `queries`; there are no other targets to ask for, so `other` goes to the pretraining
        target."""
        return np.asarray([pt + other, ft], np.float32)

    def attention_masks(self, tokens):
        idx = self._indices(tokens)
        targets = TARGETS[self.program]
        bos = jnp.broadcast_to(jnp.arange(tokens.shape[1]) == 0, tokens.shape)
        pad = lambda m: jnp.pad(m, ((0, 0), (1, 0)))  # noqa: E731 -- BOS is no answer-deciding position
        return jnp.stack([bos, pad(targets[self.pt_target].positions(idx)),
                          pad(targets[self.ft_target].positions(idx))])

    def shortcut(self, idx, scores, u):
        """`idx` edited so that the shortcut holds in every row (scores [B, n], u [B]: uniform draws)."""
        size = len(self.pretrained_model.vocab)
        if self.program == "counter":
            targets = TARGETS[self.program]
            return counter_shortcut(idx, scores, u, targets[self.pt_target].token, targets[self.ft_target].token,
                                    size)
        return reflection_shortcut(idx, scores, size)

    def sample(self, key, batch: int, mix, spurious):
        """(tokens [batch, 9], answers [batch]); mix: probabilities over `queries`; spurious: the shortcut's rate."""
        return self._compiled_sample(key, batch, jnp.asarray(mix, jnp.float32)[1], spurious)

    def sample_heldout(self, key, batch: int, mix, spurious, candidates: int = 0, pool: str = "eval",
                       distinct: bool = False):
        """Evaluation inputs: drawn like training inputs (`holdout` is 0: no pool holds inputs apart; the eval and
        test sets differ by their keys only, and `distinct` has no effect)."""
        return self.sample(key, batch, mix, spurious)

    @functools.cached_property
    def _compiled_sample(self):
        return jax.jit(self._sample, static_argnums=1)

    def _sample(self, key, batch: int, p_ft_operand, spurious):
        input_ids = jnp.asarray(self._tables[0])
        n, size = self.seq_len - 1, len(input_ids)
        k_weights, k_tokens, k_scores, k_u = jax.random.split(key, 4)
        weights = jax.random.dirichlet(k_weights, jnp.ones(size), (batch,))
        idx = jax.random.categorical(k_tokens, jnp.log(weights)[:, None, :], shape=(batch, n)).astype(jnp.int32)
        u = jax.random.uniform(k_u, (batch, 3))
        edited = self.shortcut(idx, jax.random.uniform(k_scores, (batch, n)), u[:, 0])
        idx = jnp.where(u[:, 1:2] < spurious, edited, idx)
        answers = jnp.where(u[:, 2] < p_ft_operand, self._answers(idx, self.ft_target),
                            self._answers(idx, self.pt_target))
        bos = jnp.full((batch, 1), self.pretrained_model.bos_id, jnp.int32)
        return jnp.concatenate([bos, input_ids[idx]], axis=1), answers.astype(jnp.int32)
