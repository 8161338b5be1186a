"""Evaluations run as phases after fine-tuning (the microscope): each is jitted and vmapped over members.

Each is a function of a `study.GroupRun` that reads the phase-final states (`run.states`), may train further
phases (`run.train_phase`) and writes its own results part. They run in run-tree order whatever order the config
lists them in: reFT first, so that the other measurements also cover the reverse-fine-tuned members and the
control; the regime diagnostics always run, last.
"""
from fttrace.answer.evals.attention import run_attention
from fttrace.answer.evals.components import run_components
from fttrace.answer.evals.patch import run_patch
from fttrace.answer.evals.probe import run_probe
from fttrace.answer.evals.prune import run_prune
from fttrace.answer.evals.reft import run_reft
from fttrace.answer.evals.regime import run_regime
from fttrace.answer.evals.weights import run_weights

EVALS = {"reft": run_reft, "prune": run_prune, "probe": run_probe, "attention": run_attention, "patch": run_patch,
         "components": run_components, "weights": run_weights, "regime": run_regime}
NEEDS_COMPONENTS = ("components",)  # evaluations only a compiled model (task.pretrained_model.components) allows
ALWAYS = ("regime",)  # evaluations every run makes, listed or not


def in_run_order(names) -> list[str]:
    return [name for name in EVALS if name in names or name in ALWAYS]
