"""Measurements made after the study's training phases (the microscope): each is jitted and vmapped over members.

A measurement is a function of a `study.GroupRun` that reads the phase-final states (`run.states`) and the members
of each level (`run.tables`) and returns its records (a long frame of phase `phase`); the study writes them as one
results part, and a resumed run skips a part already written. What trains after fine-tuning (reFT and its control,
the members of known answer) is not here: those are phases of the study kind (answer/study.py, TRAINED), run first,
so that the measurements also cover them. Measurements run in this order whatever order the config lists them in;
the regime diagnostics always run, last.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from fttrace.answer.evals import attention, components, patch, probe, prune, regime, weights


@dataclasses.dataclass(frozen=True)
class Measurement:
    phase: str                          # the phase of its records, and the name of its results part
    measure: Callable                   # GroupRun -> records (pd.DataFrame)
    check: Callable | None = None       # (config, model config) -> None: its section's values (config.require)


EVALS = {"prune": Measurement(prune.PHASE, prune.measure_prune, prune.check_config),
         "probe": Measurement(probe.PHASE, probe.measure_probe, probe.check_config),
         "attention": Measurement(attention.PHASE, attention.measure_attention),
         "patch": Measurement(patch.PHASE, patch.measure_patch, patch.check_config),
         "components": Measurement(components.PHASE, components.measure_components, components.check_config),
         "weights": Measurement(weights.PHASE, weights.measure_weights),
         "regime": Measurement(regime.PHASE, regime.measure_regime)}
NEEDS_COMPONENTS = ("components",)  # evaluations only a compiled model (task.pretrained_model.components) allows
ALWAYS = ("regime",)  # measurements every run makes, listed or not


def in_run_order(names) -> list[str]:
    return [name for name in EVALS if name in names or name in ALWAYS]
