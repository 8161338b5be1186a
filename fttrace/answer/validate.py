"""The config checks of the answer-position study kind (PCFG, Tracr): every section it reads, each value against
what the kind can run; one `fttrace: error:` naming the offending key (`config.require`)."""
from __future__ import annotations

import ml_collections

from fttrace.answer import planted, reft
from fttrace.answer.evals import EVALS, NEEDS_COMPONENTS, in_run_order
from fttrace.answer.study import SECTIONLESS, TRAINED
from fttrace.answer.sweep import PHASE_SHAPES, finetune_axes
from fttrace.answer.tasks import registry
from fttrace.config import check_checkpoint, check_numerics, check_optimizer, check_swept_optimizer, finite_number, \
    positive_int, require
from fttrace.engine import protocols
from fttrace.engine.train import OPTIMIZER_AXES


def _check_named_values(values, names, key: str, in_range, problem: str) -> None:
    """Each value of a swept axis is a name from `names` whose value satisfies `in_range` (checked under the name's
    own key), or a number for which `in_range` holds."""
    for value in values:
        if isinstance(value, str):
            require(value in names, key, f"unknown name {value!r}; known: {', '.join(names)}")
            named = names[value]
            require(finite_number(named) and in_range(named), f"{names_key(key)}.{value}", f"{named!r} {problem}")
        else:
            require(finite_number(value) and in_range(value), key, f"{value!r} {problem}")


def names_key(axis: str) -> str:
    """The config section that names an axis's values: sweep.finetune_lr -> finetune.lr_scale, sweep.prior ->
    task.priors."""
    return {"sweep.finetune_lr": "finetune.lr_scale", "sweep.prior": "task.priors"}.get(axis, axis)


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Check an answer-position config's values; the error names the offending key."""
    for section in ("task", "model", "pretrain", "finetune", "sweep", "eval", "checkpoint"):
        require(section in config, section, "missing section")
    require(config.task.name in registry.TASKS, "task.name",
            f"unknown task {config.task.name!r}; known: {', '.join(registry.TASKS)}")
    for key in ("model.d_model", "model.n_layers", "model.n_heads", "sweep.seeds", "eval.examples",
                "eval.member_batch"):
        positive_int(config, key)
    require(config.model.d_model % config.model.n_heads == 0 or config.model.get("head_dim", 0) > 0,
            "model.n_heads", "must divide model.d_model (or set model.head_dim)")
    check_numerics(config)
    require(config.model.get("activation", "gelu") in ("gelu", "relu"), "model.activation",
            "must be 'gelu' or 'relu'")
    evals = config.get("evals", ())
    _check_phases(config, evals)
    _check_sweep(config)
    check_checkpoint(config)
    task = registry.build_task(config)  # raises UserError on a bad task config
    model = config.model
    if task.pretrained_model is not None:  # the model is the task's, as compiled
        require(not config.sweep.get("shapes", {}), "sweep.shapes",
                f"must be empty: task {config.task.name!r} brings its own model, whose shape cannot be swept")
        model = task.pretrained_model.model_config
    for name in evals:
        require(name in EVALS or name in TRAINED, "evals",
                f"unknown evaluation {name!r}; known: {', '.join([*TRAINED, *EVALS])}")
        require(name in config or name in SECTIONLESS, name, f"missing section (needed by evaluation {name!r})")
        require(name not in NEEDS_COMPONENTS or getattr(task.pretrained_model, "components", None), "evals",
                f"evaluation {name!r} needs a task whose model is compiled (task.name 'tracr'), not "
                f"{config.task.name!r}")
    if config.sweep.get("protocol", ()):
        protocols.validate_for_model(config, model)
    require(0 <= config.finetune.get("target", 0.0) <= 1, "finetune.target", "must be in [0, 1] (0: no criterion)")
    # Each trained phase and each measurement checks its own section.
    if "reft" in evals:
        reft.check_config(config)
    if "planted" in evals:
        planted.check_config(config, task)
    for name in in_run_order(evals):
        if EVALS[name].check is not None:
            EVALS[name].check(config, model)


def _check_phases(config, evals) -> None:
    """The training phases' sections: budget, evaluation steps, schedule, warm-up, optimiser."""
    for phase in ("pretrain", "finetune") + (("reft",) if "reft" in evals else ()):
        steps = positive_int(config, f"{phase}.steps")
        every = positive_int(config, f"{phase}.eval_every")
        positive_int(config, f"{phase}.batch_size")
        require(steps % every == 0, f"{phase}.eval_every", f"must divide {phase}.steps ({steps})")
        require(config[phase].get("eval_schedule", "even") in ("even", "log"), f"{phase}.eval_schedule",
                "must be 'even' (every eval_every steps) or 'log' (log-spaced below eval_every, then even)")
        require(config[phase].schedule in ("constant", "cosine"), f"{phase}.schedule",
                "must be 'constant' or 'cosine'")
        require(0 <= config[phase].warmup_steps <= steps, f"{phase}.warmup_steps", f"must be in [0, {steps}]")
    for phase in ("pretrain", "finetune") + (("reft",) if "reft" in evals else ()):
        check_optimizer(config, phase)


def _check_sweep(config) -> None:
    """The sweep: its axes, named values, swept optimiser settings, zipped axes and group shapes."""
    sweep = config.sweep
    for axis in ("pretrain_lr", "prior", "finetune_lr", "spurious"):
        require(isinstance(sweep[axis], tuple) and len(sweep[axis]) > 0, f"sweep.{axis}",
                "must be a non-empty tuple")
    for lr in sweep.pretrain_lr:
        require(finite_number(lr) and lr > 0, "sweep.pretrain_lr", f"bad learning rate {lr!r}: must be a positive "
                "finite number")
    _check_named_values(sweep.finetune_lr, config.finetune.lr_scale, "sweep.finetune_lr", lambda v: v > 0,
                        "is not a positive finite learning rate")
    _check_named_values(sweep.prior, config.task.priors, "sweep.prior", lambda v: 0 <= v <= 1, "is not in [0, 1]")
    for p in sweep.get("finetune_priors", ()):
        require(p in sweep.prior, "sweep.finetune_priors", f"{p!r} is not one of sweep.prior {tuple(sweep.prior)!r}")
    for c in sweep.spurious:
        require(isinstance(c, (int, float)) and 0 <= c <= 1, "sweep.spurious", f"{c!r} is not in [0, 1]")
    for section in ("pretrain_optimizer", "finetune_optimizer"):
        for key, values in sweep.get(section, {}).items():
            require(key in OPTIMIZER_AXES, f"sweep.{section}.{key}",
                    f"not an optimiser hyperparameter a member can vary (one of {', '.join(OPTIMIZER_AXES)})")
            require(isinstance(values, tuple) and len(values) > 0 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in values),
                f"sweep.{section}.{key}", "must be a non-empty tuple of non-negative numbers")
            check_swept_optimizer(f"sweep.{section}.{key}", key, values)
            phase = section.split("_")[0]  # pretrain, finetune
            require(key != "warmup_steps" or max(values) <= config[phase].steps, f"sweep.{section}.{key}",
                    f"a warm-up longer than {phase}.steps ({config[phase].steps})")
    zipped = tuple(sweep.get("zip", ()))
    if zipped:
        axes = finetune_axes(config)
        require(len(zipped) >= 2 and len(set(zipped)) == len(zipped), "sweep.zip",
                "must name two or more different fine-tuning axes")
        for name in zipped:
            require(name in axes, "sweep.zip", f"{name!r} is not a fine-tuning axis (one of {', '.join(axes)})")
        require(len({len(axes[name]) for name in zipped}) == 1, "sweep.zip",
                "its axes must have as many values each (" + ", ".join(f"{n}: {len(axes[n])}" for n in zipped) + ")")
    for key, values in sweep.get("shapes", {}).items():
        require(key in config.model or key in PHASE_SHAPES, f"sweep.shapes.{key}",
                f"is not a model field or one of {', '.join(PHASE_SHAPES)}")
        require(isinstance(values, tuple) and len(values) > 0, f"sweep.shapes.{key}", "must be a non-empty tuple")
        if key in PHASE_SHAPES:
            section = config[PHASE_SHAPES[key][0]]
            for steps in values:
                require(isinstance(steps, int) and steps > 0 and steps % section.eval_every == 0
                        and steps >= section.warmup_steps, f"sweep.shapes.{key}",
                        f"{steps!r} must be a positive multiple of {PHASE_SHAPES[key][0]}.eval_every "
                        f"({section.eval_every}) and at least its warmup_steps")
