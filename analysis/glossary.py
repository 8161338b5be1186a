"""The symbols and terms the summary and the report use, each in one line: a reader who has not read the reference
study can follow the answer without it. `used` keeps the entries a text mentions (and those their meanings mention), in this order."""
from __future__ import annotations

import re

from analysis.taxonomy import CLASS_MEANINGS

TERMS = {
    "C_PT": "the pretraining capability: count the operand O_PT in the input; also its accuracy on fresh held-out "
            "test queries",
    "C_FT": "the fine-tuning capability: the same task on the operand O_FT; also its held-out test accuracy",
    "O_PT": "the operand token pretraining asks about",
    "O_FT": "the operand token fine-tuning asks about; it appears in pretraining at the sampling prior",
    "prior": "sampling prior: how often O_FT is asked about during pretraining (high, medium, low)",
    "C_Tr": "share of the fine-tuning training set that carries a spurious shortcut to the answer",
    "C_Te": "the same share in a test set (C_Te = 0: no shortcut; C_Te = 1: every query has it)",
    "operand-blind": "answering O_FT queries with the pretraining answer, as if the operand were O_PT; the "
                     "operand-blind level is the C_FT such a model scores",
    "fine-tuning LR": "small, medium, large: the fine-tuning learning rate, 1000, 100 and 10 times below "
                      "pretraining's in the reference study",
    "reFT": "reverse fine-tuning: training the fine-tuned model on the pretraining task again",
    "control": "a model pretrained on the members' own query mix with O_PT asked about an unasked terminal instead "
               "(it never had C_PT), then trained on C_PT like reFT: what learning C_PT from scratch costs; 'x1', "
               "'x10': its LR over the matched reFT LR",
    "matched null": "the control fine-tuned like a real member (same LR, C_Tr, criterion): a model that never had "
                    "C_PT with the same C_FT; its instruments' readings set T_prune and T_reft",
    "planted wrapper": "a real member's fine-tuning redone with only the last layer's output side free: C_PT intact "
                       "by construction, its read-out re-mapped (the instruments' power)",
    "revived": "C_PT back to the revival threshold (a share of the lineage's pretrained C_PT)",
    "k": "units pruned: neurons, heads or weights removed in order of their predicted effect on the C_PT loss",
    "T_prune": "the C_PT gain from pruning that the matched nulls exceed only at the null quantile's rate (older "
               "stores: random neurons and the control); above it: revived by pruning",
    "T_reft": "the reFT steps to revival that the matched nulls beat only at the null quantile's rate (older stores: "
              "the control); below it: revived by reFT",
    "selectivity": "a probe's accuracy for the pretraining target minus that for a control target with the same "
                   "input statistics",
    "seed": "pretraining seed, the unit of replication: a seed's fine-tuned members are not independent draws",
    "SESOI": "smallest effect size of interest: a claim is refuted when its effect is shown to lie below it",
    "Holm": "Holm's step-down correction: the family-wise error rate over the claims tested stays at alpha",
    "power": "the chance that the exact test gets below its Holm level if the true effect were the SESOI",
    "Kaplan-Meier": "estimate of the share not yet revived after t steps, using runs censored at their budget",
    "censored": "a run that did not revive within its budget: revival takes longer than the budget",
    "log-rank": "test that two arms share one survival curve",
    **{name: f"class: {meaning}" for name, meaning in CLASS_MEANINGS.items()},
}


def _pattern(term: str) -> re.Pattern:
    return re.compile(rf"(?<![\w-]){re.escape(term)}(?![\w-])", re.IGNORECASE if " " in term or "-" in term
                      else 0)


PATTERNS = {term: _pattern(term) for term in TERMS}


def used(text: str) -> list[tuple[str, str]]:
    """(term, meaning) for every term `text` mentions, and every term those meanings mention."""
    found: set[str] = set()
    while True:
        more = {term for term in TERMS if term not in found and PATTERNS[term].search(text)}
        if not more:
            return [(term, meaning) for term, meaning in TERMS.items() if term in found]
        found |= more
        text = " ".join(TERMS[term] for term in more)
