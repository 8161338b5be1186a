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


def _random_pick(scores, candidates, k):
    """Boolean mask choosing min(k, #candidates) of the `candidates` positions [..., L] uniformly at random.

    scores: uniform draws [..., L]; the chosen candidates are those whose score ranks below k among the
    candidates (ties broken by position). k: [..., 1].
    """
    s = jnp.where(candidates, scores, 2.0)
    i = jnp.arange(s.shape[-1])
    before = (s[..., None, :] < s[..., :, None]) | ((s[..., None, :] == s[..., :, None]) & (i < i[:, None]))
    return candidates & (before.sum(-1) < k)


@dataclasses.dataclass(frozen=True)
class PCFGTask:
    """A counting or indexing task over a grammar, with a pretraining and a fine-tuning operand."""
    grammar: Grammar
    task: str = "counter"
    data_len: int = 27
    pt_operand: int = 0  # terminal index of O_PT
    ft_operand: int = 2  # terminal index of O_FT

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASKS)}")
        self.grammar.validate()
        if self.grammar.max_len > self.data_len:
            raise ValueError(f"data_len {self.data_len} is shorter than the grammar's longest string "
                             f"({self.grammar.max_len})")
        for name in ("pt_operand", "ft_operand"):
            if not 0 <= getattr(self, name) < self.grammar.n_terminals:
                raise ValueError(f"{name} must be a terminal index in [0, {self.grammar.n_terminals})")
        if self.pt_operand == self.ft_operand:
            raise ValueError("pt_operand and ft_operand must differ")
        if self.grammar.n_terminals < 3:
            raise ValueError("the grammar needs at least 3 terminals (two operands and a filler)")

    @property
    def vocab(self) -> Vocab:
        return Vocab(self.grammar.n_terminals, self.data_len)

    @property
    def seq_len(self) -> int:
        return self.vocab.seq_len

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    pretrained_model = None  # pretraining trains from scratch
    attention_targets = ("operand", "pt_tokens", "ft_tokens")
    OPERAND_SLOT = 1  # sequences are [task, operand, data..., ANS]

    def data_of(self, tokens):
        """Terminal indices of the data slots (-1 for padding) of task sequences."""
        data = tokens[:, 2:-1] - self.vocab.first_terminal
        return jnp.where(tokens[:, 2:-1] == self.vocab.PAD, -1, data)

    def labels(self, tokens):
        """The answers about O_PT and about O_FT of sequences `tokens`, whatever operand they ask about."""
        data = self.data_of(tokens)
        return self.answer(data, self.pt_operand), self.answer(data, self.ft_operand)

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

    def _shortcut(self, data, lengths, fill, scores):
        """Edit strings (terminal indices [B, L], lengths [B]) so that O_PT's answer determines O_FT's.

        fill, scores: uniform draws [B, L] that choose the filler terminals and the positions to edit.
        """
        pt, ft = self.pt_operand, self.ft_operand
        fillers = np.asarray([t for t in range(self.grammar.n_terminals) if t not in (pt, ft)], np.int32)
        filler = jnp.asarray(fillers)[jnp.minimum((fill * len(fillers)).astype(jnp.int32), len(fillers) - 1)]
        position = jnp.arange(data.shape[-1])
        valid = position < lengths[:, None]
        is_pt, is_ft = data == pt, data == ft
        if self.task == "counter":
            surplus = is_pt.sum(-1, keepdims=True) - is_ft.sum(-1, keepdims=True)
            # The dropped and the added positions are disjoint sets and only one of them is non-empty, so
            # they can rank the same scores.
            drop = _random_pick(scores, is_pt, surplus)
            add = _random_pick(scores, valid & ~is_pt & ~is_ft, -surplus)
            return jnp.where(drop, filler, jnp.where(add, pt, data))
        data = jnp.where(is_pt, filler, data)
        after = jnp.argmax(is_ft, axis=-1, keepdims=True) + 1
        place = is_ft.any(-1, keepdims=True) & (after < lengths[:, None])
        return jnp.where(place & (position == after), pt, data)

    def sample(self, key, batch: int, p_ft_operand, spurious):
        """A batch: tokens [batch, seq_len] int32 and answer tokens [batch].

        p_ft_operand: probability that a sequence asks about O_FT (else O_PT).
        spurious: probability that a sequence carries the shortcut edit.
        Both may be traced scalars (per-member hyperparameters).
        """
        return self._compiled_sample(key, batch, p_ft_operand, spurious)

    @functools.cached_property
    def _compiled_sample(self):
        # Jitted even when called outside a jitted program (held-out sets, tests): op-by-op it takes seconds.
        return jax.jit(self._sample, static_argnums=1)

    def _sample(self, key, batch: int, p_ft_operand, spurious):
        v = self.vocab
        n = self.data_len
        widths = (self.grammar.rule_draws, n, n, 1, 1)  # rules, fillers, edit positions, shortcut?, operand
        draws = jnp.split(jax.random.uniform(key, (batch, sum(widths))), np.cumsum(widths)[:-1], axis=1)
        rules, fill, scores, u_spurious, u_operand = draws
        strings, lengths = expand(self.grammar, rules)
        data = jnp.pad(strings, ((0, 0), (0, n - strings.shape[1])), constant_values=-1)
        edited = self._shortcut(data, lengths, fill, scores)
        data = jnp.where(u_spurious < spurious, edited, data)
        use_ft = u_operand[:, 0] < p_ft_operand
        operand = jnp.where(use_ft, self.ft_operand, self.pt_operand)
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
