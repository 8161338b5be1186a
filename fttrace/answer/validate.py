"""The config checks of the answer-position study kind (PCFG, Tracr): every section it reads, each value against
what the kind can run; one `fttrace: error:` naming the offending key (`config.require`)."""
from __future__ import annotations

import ml_collections

from fttrace.answer.evals import EVALS, NEEDS_COMPONENTS
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
    sweep = config.sweep
    for axis in ("pretrain_lr", "prior", "finetune_lr", "spurious"):
        require(isinstance(sweep[axis], tuple) and len(sweep[axis]) > 0, f"sweep.{axis}",
                "must be a non-empty tuple")
    for lr in sweep.pretrain_lr:
        require(finite_number(lr) and lr > 0, "sweep.pretrain_lr", f"bad learning rate {lr!r}: must be a positive "
                "finite number")
    _check_named_values(sweep.finetune_lr, config.finetune.lr_scale, "sweep.finetune_lr", lambda v: v > 0,
                        "is not a positive finite learning rate")
    for phase in ("pretrain", "finetune") + (("reft",) if "reft" in evals else ()):
        check_optimizer(config, phase)
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
    check_checkpoint(config)
    task = registry.build_task(config)  # raises UserError on a bad task config
    model = config.model
    if task.pretrained_model is not None:  # the model is the task's, as compiled
        require(not sweep.get("shapes", {}), "sweep.shapes",
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
    if "prune" in evals:
        require(config.prune.score in ("taylor", "abs"), "prune.score", "must be 'taylor' or 'abs'")
        require(0 <= config.prune.tolerance <= 1, "prune.tolerance", "must be in [0, 1]")
        for key in ("neuron_ks", "head_ks"):
            require(all(isinstance(k, int) and k >= 0 for k in config.prune[key]), f"prune.{key}",
                    "must hold non-negative integers")
        n_heads = model.n_layers * model.n_heads
        require(max(config.prune.head_ks) <= n_heads, "prune.head_ks", f"exceeds the model's {n_heads} heads")
        for key in ("weight_fractions", "mask_budgets"):
            require(all(0 <= f <= 1 for f in config.prune[key]), f"prune.{key}", "must hold fractions in [0, 1]")
        positive_int(config, "prune.random_draws")
    if "patch" in evals:
        positive_int(config, "patch.examples")
    require(0 <= config.finetune.get("target", 0.0) <= 1, "finetune.target", "must be in [0, 1] (0: no criterion)")
    if "reft" in evals:
        require(config.reft.lr_mode in ("shared", "tied"), "reft.lr_mode", "must be 'shared' or 'tied'")
        require(config.reft.lr_factor > 0, "reft.lr_factor", "must be positive")
        require(config.reft.lr_scale > 0, "reft.lr_scale", "must be positive")
        require(0 < config.reft.threshold <= 1, "reft.threshold", "must be in (0, 1]")
    if "planted" in evals:
        require("reft" in evals and config.reft.control, "evals",
                "evaluation 'planted' fine-tunes the reFT control: it needs 'reft' with reft.control")
        require(not config.sweep.get("protocol", ()), "evals",
                "evaluation 'planted' fine-tunes like plain fine-tuning, not with sweep.protocol")
        require("control" in task.queries, "evals", f"evaluation 'planted' needs a task that can ask about its "
                                                     f"control terminal, not {config.task.name!r}")
    if "components" in evals:
        positive_int(config, "components.examples")
    if "probe" in evals:
        for key in ("probe.train_examples", "probe.test_examples", "probe.steps"):
            positive_int(config, key)
        require(config.probe.fitter in ("softmax", "ridge"), "probe.fitter", "must be 'softmax' or 'ridge'")
        require(config.probe.ridge >= 0, "probe.ridge", "must be non-negative")
