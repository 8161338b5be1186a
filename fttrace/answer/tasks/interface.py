"""What the engine asks of a task: the interface the answer study, the training loop and every evaluation use.

Sequences are token ids [N, seq_len] whose answer is read at the last position. Every task has targets on the same
inputs: the pretraining target (C_PT), the fine-tuning target (C_FT) and a control target that no query asks for
(the probes' null). A sequence's *query* says which target labels it: `PCFGTask` (pcfg.py) asks about one of the
operands named in the sequence (O_PT, O_FT, or another pretraining operand); `TracrTask` (tracr_task.py) labels a
sequence with one of two functions of it, the first compiled into the model's weights by Tracr. Which queries
each phase asks is fttrace/answer/tasks/queries.py.
"""
from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    vocab_size: int  # token ids of inputs and answers are < vocab_size
    seq_len: int  # tokens per sequence
    queries: tuple[str, ...]  # names of the query kinds: "pt", "ft" and possibly "other"
    attention_targets: tuple[str, ...]  # names of the key-position sets of `attention_masks`
    holdout: float  # the share of inputs kept out of every training stream (0: none)
    # None, or the pretrained model itself (`model_config` and numpy `params`, plus `components` telling what each
    # part computes): then there is no pretraining, every pretraining member starts as (and is) this model.
    pretrained_model: Any

    def query_mix(self, pt: float = 0.0, ft: float = 0.0, other: float = 0.0):
        """float32 [len(queries)]: the probabilities of each query kind (a share without a kind folds into pt)."""

    def sample(self, key, batch: int, mix, spurious):
        """(tokens [batch, seq_len] int32, answers [batch] int32): training inputs, drawn on device from `key`.

        mix: probabilities over `queries`; spurious: probability that a sequence carries the task's shortcut.
        Both may be traced per-member arrays.
        """

    def sample_heldout(self, key, batch: int, mix, spurious, candidates: int = 256, pool: str = "eval",
                       distinct: bool = False):
        """Like `sample`, from the held-out inputs of `pool` only: "eval" (the sets stopping criteria and selections
        read) or "test" (end-of-phase measurements), disjoint where the task holds inputs out; `distinct`: no input
        twice where the pool allows."""

    def labels(self, tokens) -> dict:
        """{"pt", "ft", "control"}: answers [N] of each target for sequences `tokens` [N, seq_len]."""

    def attention_masks(self, tokens):
        """bool [len(attention_targets), N, seq_len]: for each target set, the key positions it holds."""

    def vocabulary(self):
        """The token ids as strings and back (fttrace.model.vocab.Vocabulary)."""

    def describe(self) -> dict:
        """JSON-ready facts about the task for the manifest (operands, targets, compiled components)."""
