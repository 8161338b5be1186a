"""Evaluations run after fine-tuning (the microscope): each is jitted and vmapped over members.

A measurement is a function of a `study.GroupRun` that reads the phase-final states (`run.states`) and returns its
records (a long frame of phase `phase`); the study writes them as one results part, and a resumed run skips a part
already written. reFT is the one evaluation that trains (`trains`): the reverse fine-tuning and its controls are
phases of their own, each written as it finishes. They run in run-tree order whatever order the config lists them
in: reFT first, then the members of known answer ("planted": the fine-tuned matched nulls and the planted wrappers),
so that the other measurements also cover the reverse-fine-tuned members, the control and those; the regime
diagnostics always run, last.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from fttrace.answer.evals import attention, components, patch, planted, probe, prune, reft, regime, weights


@dataclasses.dataclass(frozen=True)
class Measurement:
    phase: str                          # the phase of its records, and the name of its results part
    measure: Callable | None = None     # GroupRun -> records (pd.DataFrame)
    trains: Callable | None = None      # GroupRun -> None: trains and writes phases of its own


EVALS = {"reft": Measurement(reft.REFT, trains=reft.run_reft),
         "planted": Measurement(planted.NULL_FINETUNE, trains=planted.run_planted), "prune": Measurement(prune.PHASE, prune.measure_prune),
         "probe": Measurement(probe.PHASE, probe.measure_probe),
         "attention": Measurement(attention.PHASE, attention.measure_attention),
         "patch": Measurement(patch.PHASE, patch.measure_patch),
         "components": Measurement(components.PHASE, components.measure_components),
         "weights": Measurement(weights.PHASE, weights.measure_weights),
         "regime": Measurement(regime.PHASE, regime.measure_regime)}
NEEDS_COMPONENTS = ("components",)  # evaluations only a compiled model (task.pretrained_model.components) allows
ALWAYS = ("regime",)
SECTIONLESS = ("planted",)  # evaluations set by other sections (planted: finetune's and reft's)  # evaluations every run makes, listed or not


def in_run_order(names) -> list[str]:
    return [name for name in EVALS if name in names or name in ALWAYS]
