"""PCFG counting and indexing tasks, sampled in JAX inside the jitted training loop.

The grammar is *layered*: level 0 holds the start symbol, each nonterminal of level l rewrites to 1-3 symbols of
level l+1, and the symbols of the last level are terminals. Generation is therefore a fixed number of parallel
rewrite passes over a fixed-size buffer, which JAX can jit and vmap; the longest string is 3**depth tokens.
A batch spends one uniform draw per random choice (rules, shortcut edits, operand), all taken at once: on XLA:CPU
every separate `jax.random` call is a loop of its own, and sorts and scatters are slow, so the sampler uses
neither (rules are picked by comparing a draw with cumulative probabilities, strings are compacted and edit
positions ranked by comparisons).

A sequence is laid out as

    [task, operand, x_1 .. x_n, PAD .. PAD, ANS]      (length data_len + 3)

and the model predicts the answer token from the ANS position:
  counter  the number of occurrences of `operand` in x (a number token N0..N{data_len})
  index    the position of the first occurrence of `operand` in x (N0..), or NONE when it does not occur

Capabilities: C_PT is the task on the pretraining operand O_PT, C_FT the task on the fine-tuning operand O_FT.
Pretraining draws O_FT with probability `prior` (its *sampling prior*) and O_PT otherwise.

Spurious correlation (the shortcut that lets a wrapper form): with probability `spurious` a fine-tuning sequence
is edited so that the pretraining capability applied to O_PT yields the fine-tuning answer:
  counter  count(O_PT) is made equal to count(O_FT) (surplus O_PT become filler terminals, missing ones replace
           filler terminals at random positions)
  index    every O_PT is replaced by filler and one O_PT is placed right after the first O_FT, so that
           index(O_FT) = index(O_PT) - 1.
Edited strings may leave the grammar's language; unedited strings never do.
"""
from __future__ import annotations

import dataclasses
import functools
import random
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fttrace.model.vocab import Vocabulary

# A grammar: levels[l][nt] = list of (probability, rhs), rhs = tuple of symbol indices of level l+1
# (terminal indices at the last level). Level 0 has exactly one nonterminal, the start symbol.
Rules = Sequence[Sequence[Sequence[tuple]]]

# The default grammar: S -> 4 level-1 nonterminals -> 6 level-2 nonterminals -> 10 terminals t0..t9.
# Strings are 1-27 terminals long (mean about 12); every terminal occurs, with different frequencies.
DEFAULT_RULES: Rules = (
    (  # S
        ((0.40, (0, 1)), (0.35, (0, 1, 2)), (0.25, (2, 3))),
    ),
    (  # A, B, C, D -> E F G H I J
        ((0.5, (0, 1)), (0.2, (2,)), (0.3, (0, 3, 4))),
        ((0.4, (1, 2)), (0.3, (3, 5, 0)), (0.3, (4,))),
        ((0.5, (5, 4)), (0.3, (2, 0, 1)), (0.2, (3,))),
        ((0.4, (4, 5)), (0.3, (1,)), (0.3, (0, 2, 3))),
    ),
    (  # E, F, G, H, I, J -> t0 .. t9
        ((0.4, (0, 1)), (0.3, (2,)), (0.3, (3, 0, 4))),
        ((0.5, (5, 6)), (0.3, (1, 7, 2)), (0.2, (8,))),
        ((0.4, (9, 3)), (0.3, (4,)), (0.3, (6, 0, 5))),
        ((0.5, (2, 8)), (0.3, (7, 9, 1)), (0.2, (3,))),
        ((0.4, (4, 5)), (0.3, (6,)), (0.3, (8, 2, 9))),
        ((0.5, (1, 3)), (0.2, (7,)), (0.3, (0, 9, 6))),
    ),
)

TASKS = ("counter", "index")


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Token ids: PAD, ANS, one token per task, the terminals, the numbers 0..data_len, NONE."""
    n_terminals: int
    data_len: int

    PAD = 0
    ANS = 1
    TASK = {"counter": 2, "index": 3}

    @property
    def first_terminal(self) -> int:
        return 4

    def terminal(self, i) -> int:
        return self.first_terminal + i

    def number(self, n):
        return self.first_terminal + self.n_terminals + n

    @property
    def none(self) -> int:
        return self.number(self.data_len + 1)

    @property
    def size(self) -> int:
        return self.none + 1

    @property
    def seq_len(self) -> int:
        return self.data_len + 3

    @property
    def strings(self) -> tuple[str, ...]:
        """Each id's token as text: <pad> <ans> <counter> <index>, the terminals t0 t1 ..., the numbers, <none>."""
        return (("<pad>", "<ans>", "<counter>", "<index>") + tuple(f"t{i}" for i in range(self.n_terminals))
                + tuple(str(n) for n in range(self.data_len + 1)) + ("<none>",))


@dataclasses.dataclass(frozen=True)
class Grammar:
    rules: Rules
    n_terminals: int

    @property
    def depth(self) -> int:
        return len(self.rules)

    @property
    def max_len(self) -> int:
        return 3 ** self.depth

    def validate(self) -> None:
        if len(self.rules[0]) != 1:
            raise ValueError("the grammar's level 0 must hold exactly one (start) symbol")
        for level, nts in enumerate(self.rules):
            n_next = len(self.rules[level + 1]) if level + 1 < self.depth else self.n_terminals
            for nt, alternatives in enumerate(nts):
                if not alternatives or abs(sum(p for p, _ in alternatives) - 1) > 1e-6:
                    raise ValueError(f"grammar level {level} symbol {nt}: rule probabilities must sum to 1")
                for _, rhs in alternatives:
                    if not 1 <= len(rhs) <= 3 or not all(0 <= s < n_next for s in rhs):
                        raise ValueError(f"grammar level {level} symbol {nt}: bad right-hand side {rhs}")

    @property
    def rule_draws(self) -> int:
        """Uniform draws that one string takes: one per slot of each rewrite pass (1 + 3 + 9 + ...)."""
        return sum(3 ** level for level in range(self.depth))

    def tables(self):
        """Dense arrays per level: thresholds [n, R-1], right-hand sides [n, R, 3], lengths [n, R].

        A uniform draw u picks rule #(thresholds <= u): thresholds are the cumulative probabilities, padded with
        2.0 (never reached) where a symbol has fewer than R rules.
        """
        out = []
        for nts in self.rules:
            r = max(len(a) for a in nts)
            thresholds = np.full((len(nts), r - 1), 2.0, np.float32)
            rhs = np.zeros((len(nts), r, 3), np.int32)
            lens = np.zeros((len(nts), r), np.int32)
            for i, alternatives in enumerate(nts):
                thresholds[i, :len(alternatives) - 1] = np.cumsum([p for p, _ in alternatives])[:-1]
                for j, (_, symbols) in enumerate(alternatives):
                    rhs[i, j, :len(symbols)] = symbols
                    lens[i, j] = len(symbols)
            out.append((jnp.asarray(thresholds), jnp.asarray(rhs), jnp.asarray(lens)))
        return out


def sample_strings(grammar: Grammar, key: jax.Array, n: int):
    """n strings from the grammar: terminal indices [n, 3**depth] (-1 past the end) and lengths [n]."""
    return expand(grammar, jax.random.uniform(key, (n, grammar.rule_draws)))


def expand(grammar: Grammar, draws):
    """Strings from uniform draws [n, grammar.rule_draws]: terminal indices [n, 3**depth] (-1 past the end), lengths.

    Every symbol of a pass owns three child slots, of which its rule fills the first 1-3; the leaves of the
    full tree, read in order with the empty slots removed, are the string.
    """
    n = draws.shape[0]
    symbols = jnp.zeros((n, 1), jnp.int32)
    filled = jnp.ones((n, 1), bool)
    start = 0
    for thresholds, rhs, lens in grammar.tables():
        width = symbols.shape[1]
        u = draws[:, start:start + width]
        start += width
        choice = (u[..., None] >= thresholds[symbols]).sum(-1)  # [n, width]
        filled = filled[..., None] & (jnp.arange(3) < lens[symbols, choice][..., None])
        symbols, filled = rhs[symbols, choice].reshape(n, -1), filled.reshape(n, -1)
    lengths = filled.sum(-1)
    position = jnp.cumsum(filled, axis=-1) - 1  # where each filled leaf goes
    slot = jnp.arange(symbols.shape[1])
    lands = filled[:, None, :] & (position[:, None, :] == slot[None, :, None])  # [n, slot, leaf]
    strings = jnp.where(lands, symbols[:, None, :], 0).sum(-1)
    return jnp.where(slot < lengths[:, None], strings, -1), lengths


# Hash constants of `string_hash` (numpy and JAX compute the same uint32 arithmetic, so tests can check on the host).
_HASH_MULTIPLIER, _HASH_MIX = np.uint32(0x01000193), np.uint32(0x85EBCA6B)


def string_hash(data):
    """A uint32 hash of each terminal string (indices [..., L], -1 padded); numpy or JAX arrays alike."""
    xp = jnp if isinstance(data, jax.Array) else np
    h = xp.full(data.shape[:-1], 0x811C9DC5, xp.uint32)
    for i in range(data.shape[-1]):
        h = (h ^ (data[..., i] + 2).astype(xp.uint32)) * _HASH_MULTIPLIER
    h = (h ^ (h >> 15)) * _HASH_MIX
    return h ^ (h >> 13)


POOLS = ("train", "eval", "test")  # where a string belongs (PCFGTask.in_pool)
# What a sequence's operand is: O_PT, O_FT, one of the other operands, or the control terminal (asked only by the
# matched null, which is pretrained with it in place of O_PT: fttrace/answer/tasks/queries.py).
QUERIES = ("pt", "ft", "other", "control")
NO_CONTROL = "every terminal is an operand: no terminal is left for the probes' control target"


@dataclasses.dataclass(frozen=True)
class PCFGTask:
    """A counting or indexing task over a grammar, with a pretraining and a fine-tuning operand.

    other_operands: further terminals that pretraining asks about (besides O_PT and O_FT), so that a model must
    read the operand token to answer. control_operand: a terminal that no query is ever about; its answer is the
    probes' control target (same input statistics, never asked). holdout: the share of the grammar's strings
    (by `string_hash`) kept out of every training stream, split in two pools by the same hash: "eval" (its first
    half: the sets logged during training, which stopping criteria and selections read) and "test" (its second
    half: the end-of-phase measurements), so that no test string was ever seen by a stopping rule.
    candidates: strings drawn per training sequence; the first that fits (in the pool; carrying the shortcut
    when one is asked for) is used.
    """
    grammar: Grammar
    task: str = "counter"
    data_len: int = 27
    pt_operand: int = 0  # terminal index of O_PT
    ft_operand: int = 2  # terminal index of O_FT
    other_operands: tuple = ()
    control_operand: int = -1  # -1: the terminal whose frequency is closest to O_PT's among those never asked about
    holdout: float = 0.1
    candidates: int = 24

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        self.grammar.validate()
        if self.grammar.max_len > self.data_len:
            raise ValueError(f"data_len {self.data_len} is shorter than the grammar's longest string "
                             f"({self.grammar.max_len})")
        n = self.grammar.n_terminals
        for name in ("pt_operand", "ft_operand"):
            if not 0 <= getattr(self, name) < n:
                raise ValueError(f"{name} must be a terminal index in [0, {n})")
        if self.pt_operand == self.ft_operand:
            raise ValueError("pt_operand and ft_operand must differ")
        others = tuple(self.other_operands)
        if not all(isinstance(t, int) and 0 <= t < n for t in others):
            raise ValueError(f"other_operands must be terminal indices in [0, {n})")
        if len(set(self.asked)) != len(self.asked):
            raise ValueError("other_operands must differ from each other and from pt_operand and ft_operand")
        if self.control_operand != -1 and not 0 <= self.control_operand < n:
            raise ValueError(f"control_operand must be -1 or a terminal index in [0, {n})")
        # Checked without choosing the control (`control` samples the grammar with JAX): no compilation here.
        if self.control_operand in self.asked:
            raise ValueError("control_operand must be a terminal that no query asks about")
        if self.control_operand == -1 and not self.unasked:
            raise ValueError(NO_CONTROL)
        if not 0 <= self.holdout < 1:
            raise ValueError("holdout must be in [0, 1)")
        if self.candidates < 1:
            raise ValueError("candidates must be at least 1")

    @property
    def asked(self) -> tuple:
        """Every operand a query can be about: O_PT, O_FT, then the other operands."""
        return (self.pt_operand, self.ft_operand, *self.other_operands)

    @functools.cached_property
    def terminal_frequencies(self) -> np.ndarray:
        """Mean occurrences of each terminal per string (from a fixed sample of the grammar); computed eagerly even
        when first asked inside a traced program (the sampler's control query)."""
        with jax.ensure_compile_time_eval():
            strings, _ = sample_strings(self.grammar, jax.random.PRNGKey(0), 4096)
        strings = np.asarray(strings)
        return np.bincount(strings[strings >= 0], minlength=self.grammar.n_terminals) / len(strings)

    @property
    def unasked(self) -> list:
        """The terminals no query is about: where the control comes from."""
        return [t for t in range(self.grammar.n_terminals) if t not in self.asked]

    @property
    def control(self) -> int:
        """The control terminal: never asked about (see the class docstring)."""
        if self.control_operand != -1:
            return self.control_operand
        if not self.unasked:
            raise ValueError(NO_CONTROL)
        f = self.terminal_frequencies
        return min(self.unasked, key=lambda t: abs(f[t] - f[self.pt_operand]))

    @property
    def control_query_operand(self) -> int:
        """The terminal a control query asks about: the control terminal (O_PT where there is none to ask)."""
        return self.control if self.control_operand != -1 or self.unasked else self.pt_operand

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.grammar.n_terminals, self.data_len)

    @property
    def seq_len(self) -> int:
        return self.vocab.seq_len

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def vocabulary(self) -> Vocabulary:
        """The token ids named as `Vocab.strings` names them (the exported tokenizers' words too)."""
        return Vocabulary(self.vocab.strings, pad=self.vocab.PAD, name=f"the PCFG {self.task} task")

    pretrained_model = None  # pretraining trains from scratch
    queries = QUERIES
    attention_targets = ("operand", "pt_tokens", "ft_tokens")
    OPERAND_SLOT = 1  # sequences are [task, operand, data..., ANS]

    def describe(self) -> dict:
        """What the manifest records of the task: its operands (terminal indices) and held-out share."""
        return dict(kind="pcfg", task=self.task, pt_operand=self.pt_operand, ft_operand=self.ft_operand,
                    other_operands=list(self.other_operands), control_operand=self.control, holdout=self.holdout)

    def query_mix(self, pt: float = 0.0, ft: float = 0.0, other: float = 0.0, control: float = 0.0) -> np.ndarray:
        """Probabilities over `queries`; an `other` share with no other operands goes to O_PT."""
        if not self.other_operands:
            pt, other = pt + other, 0.0
        return np.asarray([pt, ft, other, control], np.float32)

    def data_of(self, tokens):
        """Terminal indices of the data slots (-1 for padding) of task sequences."""
        data = tokens[:, 2:-1] - self.vocab.first_terminal
        return jnp.where(tokens[:, 2:-1] == self.vocab.PAD, -1, data)

    def labels(self, tokens) -> dict:
        """The answers about O_PT, about O_FT and about the control terminal of sequences `tokens`, whatever
        operand they ask about: {"pt", "ft", "control"}."""
        data = self.data_of(tokens)
        return {"pt": self.answer(data, self.pt_operand), "ft": self.answer(data, self.ft_operand),
                "control": self.answer(data, self.control)}

    def attention_masks(self, tokens):
        """Key positions [3, N, T]: the operand slot, the data tokens equal to O_PT, those equal to O_FT."""
        positions = jnp.arange(tokens.shape[1])
        operand = jnp.broadcast_to(positions == self.OPERAND_SLOT, tokens.shape)
        data = (positions > self.OPERAND_SLOT) & (positions < tokens.shape[1] - 1)
        pt = data & (tokens == self.vocab.terminal(self.pt_operand))
        ft = data & (tokens == self.vocab.terminal(self.ft_operand))
        return jnp.stack([operand, pt, ft])

    def answer(self, data, operand):
        """The answer token for terminal strings `data` [..., L] (-1 padded) and operand terminal index."""
        hit = data == operand
        if self.task == "counter":
            return self.vocab.number(hit.sum(-1))
        first = jnp.argmax(hit, axis=-1)
        return jnp.where(hit.any(-1), self.vocab.number(first), self.vocab.none)

    def is_heldout(self, data):
        """Whether terminal strings `data` [..., L] (-1 padded) belong to the held-out share of the grammar."""
        xp = jnp if isinstance(data, jax.Array) else np
        return (string_hash(data) % 1_000_000).astype(xp.int32) < int(round(self.holdout * 1_000_000))

    def in_pool(self, data, pool: str):
        """Whether strings `data` [..., L] belong to `pool`: "train" (not held out), "eval" or "test" (the first or
        second half of the held-out share). Without a held-out share every string is in every pool."""
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; known: {', '.join(POOLS)}")
        xp = jnp if isinstance(data, jax.Array) else np
        if self.holdout == 0:
            return xp.ones(data.shape[:-1], bool)
        u = (string_hash(data) % 1_000_000).astype(xp.int32)
        held, half = int(round(self.holdout * 1_000_000)), int(round(self.holdout * 500_000))
        return {"train": u >= held, "eval": u < half, "test": (u >= half) & (u < held)}[pool]

    def shortcut_holds(self, data):
        """Whether the pretraining capability applied to O_PT gives the fine-tuning answer on strings `data`:
          counter  count(O_PT) == count(O_FT)
          index    both occur and the first O_PT comes right after the first O_FT: index(O_FT) = index(O_PT) - 1
        """
        xp = jnp if isinstance(data, jax.Array) else np
        is_pt, is_ft = data == self.pt_operand, data == self.ft_operand
        if self.task == "counter":
            return is_pt.sum(-1) == is_ft.sum(-1)
        return is_pt.any(-1) & is_ft.any(-1) & (xp.argmax(is_pt, -1) == xp.argmax(is_ft, -1) + 1)

    def sample(self, key, batch: int, mix, spurious):
        """A training batch: tokens [batch, seq_len] int32 and answer tokens [batch]; no held-out string.

        mix: probabilities over `queries` (O_PT, O_FT, another operand drawn uniformly from `other_operands`, the
        control terminal).
        spurious: probability that a sequence carries the shortcut (a string of the grammar on which it holds).
        Both may be traced (per-member hyperparameters).
        """
        return self._compiled_sample(key, batch, mix, spurious, "train", self.candidates)

    def sample_heldout(self, key, batch: int, mix, spurious, candidates: int = 256, pool: str = "eval",
                       distinct: bool = False):
        """Like `sample`, from the held-out strings of `pool` only ("eval" or "test", see the class docstring).

        distinct: no string twice where the pool allows (sampling without replacement: each sequence takes the
        first of its candidates that fits and that no earlier sequence took; one whose candidates are all taken
        repeats its first fit). The draws are those of the plain call; only the choice among candidates differs.
        """
        if pool == "train":
            raise ValueError("held-out sets come from the 'eval' or 'test' pool")
        if not distinct:
            return self._compiled_sample(key, batch, mix, spurious, pool, candidates)
        data, fits, u_query, u_other = (np.asarray(x) for x in self._compiled_candidates(
            key, batch, spurious, pool, candidates))
        taken, choice = set(), np.zeros(batch, np.int32)
        for row in range(batch):
            fitting = np.flatnonzero(fits[row])
            fresh = [i for i in fitting if data[row, i].tobytes() not in taken]
            choice[row] = fresh[0] if fresh else (fitting[0] if len(fitting) else 0)
            taken.add(data[row, choice[row]].tobytes())
        chosen = np.take_along_axis(data, choice[:, None, None], axis=1)[:, 0]
        return self._compiled_tokens(jnp.asarray(chosen), mix, jnp.asarray(u_query), jnp.asarray(u_other))

    @functools.cached_property
    def _compiled_sample(self):
        # Jitted even when called outside a jitted program (held-out sets, tests): op-by-op it takes seconds.
        return jax.jit(self._sample, static_argnums=(1, 4, 5))

    @functools.cached_property
    def _compiled_candidates(self):
        return jax.jit(self._candidates, static_argnums=(1, 3, 4))

    @functools.cached_property
    def _compiled_tokens(self):
        return jax.jit(self._tokens)

    def _candidates(self, key, batch: int, spurious, pool: str, candidates: int):
        """Each sequence's candidate strings [batch, k, L], which fit [batch, k] (in the pool, and carrying the
        shortcut where one is asked for; where none does, those in the pool), and its query draws."""
        n, k = self.data_len, candidates
        widths = (k * self.grammar.rule_draws, 1, 1, 1)  # candidates' rules, shortcut?, query, other operand
        draws = jnp.split(jax.random.uniform(key, (batch, sum(widths))), np.cumsum(widths)[:-1], axis=1)
        rules, u_spurious, u_query, u_other = draws
        strings, _ = expand(self.grammar, rules.reshape(batch * k, -1))
        data = jnp.pad(strings, ((0, 0), (0, n - strings.shape[1])), constant_values=-1).reshape(batch, k, n)
        held = self.in_pool(data, pool)
        want_shortcut = u_spurious < spurious  # [batch, 1]
        fits = held & (~want_shortcut | self.shortcut_holds(data))
        # Failing any fit (rare, `candidates` sizes it), the strings of the right pool.
        fits = jnp.where(fits.any(-1, keepdims=True), fits, held)
        return data, fits, u_query, u_other

    def _sample(self, key, batch: int, mix, spurious, pool: str, candidates: int):
        data, fits, u_query, u_other = self._candidates(key, batch, spurious, pool, candidates)
        data = jnp.take_along_axis(data, jnp.argmax(fits, -1)[:, None, None], axis=1)[:, 0]  # the first fit
        return self._tokens(data, mix, u_query, u_other)

    def _tokens(self, data, mix, u_query, u_other):
        """Sequences and answers for strings `data` [batch, L], with the operand drawn by `mix` from `u_query`."""
        v = self.vocab
        batch = data.shape[0]
        mix = jnp.asarray(mix, jnp.float32)
        others = jnp.asarray(self.other_operands or (self.pt_operand,), jnp.int32)
        other = others[jnp.minimum((u_other[:, 0] * len(others)).astype(jnp.int32), len(others) - 1)]
        operand = jnp.where(u_query[:, 0] < mix[0], self.pt_operand,
                            jnp.where(u_query[:, 0] < mix[0] + mix[1], self.ft_operand, other))
        # The control query takes the last share, and only where a mix asks for it: a mix without it draws exactly
        # the operands it drew before the control query existed.
        asked = (mix[3] > 0) & (u_query[:, 0] >= mix[0] + mix[1] + mix[2])
        operand = jnp.where(asked, self.control_query_operand, operand)
        answers = self.answer(data, operand[:, None])
        data_tokens = jnp.where(data >= 0, v.terminal(data), v.PAD)
        tokens = jnp.concatenate([
            jnp.full((batch, 1), v.TASK[self.task]), v.terminal(operand)[:, None], data_tokens,
            jnp.full((batch, 1), v.ANS)], axis=1).astype(jnp.int32)
        return tokens, answers.astype(jnp.int32)


# ---------------------------------------------------------------------------------------------------------
# Slow pure-Python reference: an independent sampler, a recogniser and the labels, for the tests.

def reference_sample(grammar: Grammar, rng: random.Random) -> list[int]:
    def expand(level, symbol):
        if level == grammar.depth:
            return [symbol]
        alternatives = grammar.rules[level][symbol]
        rhs = rng.choices([r for _, r in alternatives], weights=[p for p, _ in alternatives])[0]
        return [t for s in rhs for t in expand(level + 1, s)]
    return expand(0, 0)


def reference_derivable(grammar: Grammar, terminals: Sequence[int]) -> bool:
    """Whether the grammar derives exactly this terminal string (memoised recursive descent)."""
    terminals = tuple(terminals)
    memo: dict = {}

    def spans(level, symbol, start):
        """Set of end positions e such that symbol derives terminals[start:e]."""
        k = (level, symbol, start)
        if k not in memo:
            if level == grammar.depth:
                memo[k] = {start + 1} if start < len(terminals) and terminals[start] == symbol else set()
            else:
                ends = set()
                for _, rhs in grammar.rules[level][symbol]:
                    frontier = {start}
                    for s in rhs:
                        frontier = {e for f in frontier for e in spans(level + 1, s, f)}
                    ends |= frontier
                memo[k] = ends
        return memo[k]

    return len(terminals) in spans(0, 0, 0)


def reference_answer(task: str, terminals: Sequence[int], operand: int) -> tuple[str, int | None]:
    """('count', n) or ('index', i) / ('index', None) in plain Python."""
    if task == "counter":
        return "count", sum(1 for t in terminals if t == operand)
    return "index", next((i for i, t in enumerate(terminals) if t == operand), None)
