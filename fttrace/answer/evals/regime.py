"""Regime diagnostics: does the pretrained model have the capability, and what function does each model compute?

Every run ends with this phase ("regime"), whatever `evals` lists. On test sets drawn afresh from the held-out
inputs (not the sets that training curves and stopping criteria read), for every member of every level of the
run tree — pretrained, fine-tuned, reverse-fine-tuned, the control and its C_PT training, the untrained models —:
  test.pt_acc, test.ft_acc, test.ft_shortcut_acc
        C_PT, C_FT without the shortcut (C_Te = 0) and C_FT with it (C_Te = 1)
  <query>.<function>_share   (query: pt_query | ft_query, the O_PT and O_FT test sets without the shortcut)
        output-function identification: on the inputs where the pretraining and the fine-tuning answers differ, the
        share of the model's answers that equal the fine-tuning answer (`ft`), else the pretraining answer (`pt`),
        else the majority answer of the query (`majority`), else anything (`other`). An operand-blind counter of
        O_PT answers O_FT queries with `pt`; a model that learnt C_FT with `ft`.
Rows of the task itself, on the pretraining members (the same value for each):
  test.blind_acc       C_FT accuracy of a model that answers with the pretraining target (the operand-blind level)
  test.majority_acc    C_FT accuracy of always giving the majority answer
  test.discriminating  share of O_FT test inputs whose two answers differ (the base of the shares)
  heldout.eval_share   share of evaluation and test inputs that are held-out strings (1 when the task holds out)
  heldout.train_share  share of held-out strings in a sample of training inputs (0 when the task holds out)
  heldout.fraction     the task's holdout share
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pandas as pd

from fttrace.answer.evals.common import LEVELS, evaluate_members, extra_key, member_sets, member_status
from fttrace.model.transformer import Transformer
from fttrace.engine.results import long_frame
from fttrace.engine.train import eval_sets_for

PHASE = "regime"
FUNCTIONS = ("ft", "pt", "majority", "other")
QUERY_SETS = {"pt_query": "pt", "ft_query": "ft"}
TRAIN_SAMPLE = 4096  # training inputs drawn to check that none is a held-out string


def majority_answer(answers) -> int:
    values, counts = np.unique(np.asarray(answers), return_counts=True)
    return int(values[np.argmax(counts)])


def function_shares(predicted, labels: dict, majority: int):
    """[len(FUNCTIONS)] shares of `predicted` answers on the inputs whose pretraining and fine-tuning answers differ
    (labels: task.labels of the inputs), each answer counted once in FUNCTIONS order."""
    pt, ft = labels["pt"], labels["ft"]
    discriminating = (pt != ft).astype(jnp.float32)
    is_ft = predicted == ft
    is_pt = ~is_ft & (predicted == pt)
    is_majority = ~is_ft & ~is_pt & (predicted == majority)
    is_other = ~is_ft & ~is_pt & ~is_majority
    n = jnp.maximum(discriminating.sum(), 1.0)
    return jnp.stack([(m * discriminating).sum() / n for m in (is_ft, is_pt, is_majority, is_other)])


class Diagnostics:
    def __init__(self, run):
        self.run = run
        self.model = Transformer(run.group.model)
        self.sets = eval_sets_for(run.task, run.config.eval.examples, run.config.eval.seed, name="test")
        self.labels = {q: run.task.labels(self.sets[s][0]) for q, s in QUERY_SETS.items()}
        self.majority = {q: majority_answer(self.sets[s][1]) for q, s in QUERY_SETS.items()}

    def measure(self, params) -> dict:
        """Every per-member metric of the module docstring, for one member."""
        out = {}
        predicted = {}
        for name, (tokens, answers) in self.sets.items():
            logits = self.model.apply({"params": params}, tokens, answer_only=True)
            predicted[name] = logits.argmax(-1)
            out[f"test.{name}_acc"] = (predicted[name] == answers).mean()
        for query, name in QUERY_SETS.items():
            shares = function_shares(predicted[name], self.labels[query], self.majority[query])
            for i, function in enumerate(FUNCTIONS):
                out[f"{query}.{function}_share"] = shares[i]
        return out

    def task_rows(self) -> dict:
        """The task-level rows of the module docstring (plain floats)."""
        task = self.run.task
        tokens, answers = self.sets["ft"]
        labels = self.labels["ft_query"]
        out = {"test.blind_acc": float(np.mean(np.asarray(labels["pt"]) == np.asarray(answers))),
               "test.majority_acc": float(np.mean(np.asarray(answers) == self.majority["ft_query"])),
               "test.discriminating": float(np.mean(np.asarray(labels["pt"]) != np.asarray(labels["ft"]))),
               "heldout.fraction": float(getattr(task, "holdout", 0.0))}
        if hasattr(task, "is_heldout"):
            evaluated = [self.sets[s][0] for s in self.sets] + [s[0] for s in self.run.eval_sets.values()]
            out["heldout.eval_share"] = float(np.mean([np.asarray(task.is_heldout(task.data_of(t))).mean()
                                                      for t in evaluated]))
            training, _ = task.sample(extra_key(self.run, "regime-train"), TRAIN_SAMPLE,
                                      task.query_mix(pt=1.0), 0.5)
            out["heldout.train_share"] = float(np.asarray(task.is_heldout(task.data_of(training))).mean())
            # Fresh test sets: each set's share of distinct strings, and the share of test strings that an eval set
            # (read by stopping rules) holds too.
            strings = {name: [r.tobytes() for r in np.asarray(task.data_of(tokens))] for name, (tokens, _) in
                       self.sets.items()}
            seen = {r.tobytes() for tokens, _ in self.run.eval_sets.values() for r in np.asarray(task.data_of(tokens))}
            out["test.distinct_share"] = float(np.mean([len(set(v)) / len(v) for v in strings.values()]))
            out["test.eval_overlap"] = float(np.mean([np.mean([r in seen for r in v]) for v in strings.values()]))
        return out


def measure_regime(run) -> pd.DataFrame:
    diagnostics = Diagnostics(run)
    frames = []
    task_rows = diagnostics.task_rows()
    for member_set in member_sets(run, LEVELS):
        rows, metrics = evaluate_members(run, diagnostics.measure, member_set.params, member_set.members)
        if member_set.level == "pretrain":
            metrics = dict(metrics, **{k: np.full(len(rows), v) for k, v in task_rows.items()})
        members = member_set.members.iloc[rows]
        if member_set.level == "init":  # the untrained models sit on their pretraining members' rows
            metrics = {f"init_{k}": v for k, v in metrics.items()}
        frames.append(long_frame(members, PHASE, [(0, metrics)], member_status(run, member_set, rows)))
    return pd.concat(frames, ignore_index=True)

