"""What the engine asks of a task: the interface the pipeline, the training loop and every evaluation use.

Sequences are token ids [N, seq_len] whose answer is read at the last position. Every task has two targets on
the same inputs: the pretraining target (C_PT) and the fine-tuning target (C_FT). `PCFGTask` (pcfg.py) asks
about one of two operands named in the sequence; `TracrTask` (tracr_task.py) computes one of two functions of
the whole sequence, the first compiled into the model's weights by Tracr.
"""
from __future__ import annotations

from typing import Any, Protocol


class Task(Protocol):
    vocab_size: int  # token ids of inputs and answers are < vocab_size
    seq_len: int  # tokens per sequence
    attention_targets: tuple[str, ...]  # names of the key-position sets of `attention_masks`
    # None, or the pretrained model itself (`model_config` and numpy `params`, plus `components` telling what each
    # part computes): then there is no pretraining, every pretraining member starts as (and is) this model.
    pretrained_model: Any

    def sample(self, key, batch: int, p_ft_operand, spurious):
        """(tokens [batch, seq_len] int32, answers [batch] int32), drawn on device from `key`.

        p_ft_operand: probability that a sequence is labelled with the fine-tuning target (else the pretraining
        target); spurious: probability that a sequence is edited so that the task's shortcut holds. Both may be
        traced per-member scalars.
        """

    def labels(self, tokens):
        """(pretraining answers [N], fine-tuning answers [N]) of sequences `tokens` [N, seq_len]."""

    def attention_masks(self, tokens):
        """bool [len(attention_targets), N, seq_len]: for each target set, the key positions it holds."""
