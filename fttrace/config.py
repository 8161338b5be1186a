"""Configs: load a `get_config()` file, apply `--config.KEY=VALUE` overrides, validate.

Config files are plain Python modules with `get_config(arg=None)` returning an `ml_collections.ConfigDict`
(big_vision style); `path/to/file.py:arg` passes `arg`. Overrides follow ml_collections conventions: the value
is parsed as a Python literal (`8`, `1e-3`, `"(1e-3,1e-4)"`, `True`) and falls back to a plain string, and it
must keep the type of the default it replaces. Keys under `sweep.shapes` (a model field swept across groups),
`sweep.pretrain_optimizer` and `sweep.finetune_optimizer` (an optimiser hyperparameter swept across pretraining or
fine-tuning members) may be new.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import math
import pathlib
from importlib.machinery import SourceFileLoader
from typing import Iterable

import ml_collections

from analysis.schema import RESULTS_NEUTRAL, flat
from fttrace.errors import UserError


def load(spec: str, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """Load a config file (`path.py` or `path.py:arg`, or a bundled config by name: `default`, `pcfg_counter:small`),
    apply overrides and validate it."""
    path, _, arg = spec.partition(":")
    file = locate(path)
    name = f"fttrace_config_{file.stem}"  # the loader named: a config file need not end in .py
    module_spec = importlib.util.spec_from_file_location(name, file, loader=SourceFileLoader(name, str(file)))
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as e:
        raise UserError(f"config file {path} line {e.lineno}: syntax error: {e.msg}") from None
    except SystemExit as e:  # sys.exit() in a config file ends its loading, not fttrace
        raise UserError(f"config file {path} failed to load: it called sys.exit({e.code!r})") from None
    except Exception as e:  # noqa: BLE001 -- any failure while executing user config code
        raise UserError(f"config file {path} failed to load: {type(e).__name__}: {e}") from None
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path} defines no get_config()")
    variants = getattr(module, "VARIANTS", {})
    if arg and arg not in variants:
        known = f"its variants: {', '.join(variants)}" if variants else "it has none"
        raise UserError(f"config file {path} has no variant {arg!r}; {known}")
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except SystemExit as e:
        raise UserError(f"config file {path}: get_config({arg or ''}) called sys.exit({e.code!r})") from None
    except Exception as e:  # noqa: BLE001 -- any failure inside user config code
        raise UserError(f"config file {path}: get_config({arg or ''}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"config file {path}: get_config() must return an ml_collections.ConfigDict")
    for item in overrides:
        apply_override(config, item)
    validate(config)
    return config


# The bundled configs: package data, so that an installed wheel finds them by name as a checkout does (the
# checkout's top-level `configs/` is a link to this folder).
CONFIGS_DIR = pathlib.Path(__file__).resolve().parent / "configs"


def locate(path: str, directory: pathlib.Path = CONFIGS_DIR) -> pathlib.Path:
    """The config file `path` names: an existing file, or else a bundled config's name (`default`, `default.py`)."""
    file = pathlib.Path(path)
    if file.is_file():
        return file
    bundled = directory / (path if path.endswith(".py") else f"{path}.py")
    if "/" not in path and bundled.is_file() and _defines_get_config(bundled):
        return bundled
    names = ", ".join(name for name, _, _ in bundled_configs(directory))
    raise UserError(f"config file not found: {path}" + (f" (bundled configs: {names})" if names else ""))


def _defines_get_config(file: pathlib.Path, tree: ast.Module | None = None) -> bool:
    tree = tree or ast.parse(file.read_text())
    return any(isinstance(n, ast.FunctionDef) and n.name == "get_config" for n in tree.body)


def bundled_configs(directory: pathlib.Path = CONFIGS_DIR) -> list[tuple[str, str, dict]]:
    """(name, what it runs: its docstring's first line, its variants {name: description}) of each config file in
    `directory` that defines get_config(); read from the source, nothing is imported."""
    found = []
    for file in sorted(directory.glob("*.py")) if directory.is_dir() else ():
        tree = ast.parse(file.read_text())
        if _defines_get_config(file, tree):
            first = (ast.get_docstring(tree) or "").split("\n\n")[0].replace("\n", " ")
            found.append((file.stem, first.split(". ")[0].rstrip("."), _variants(tree, directory)))
    return found


def _variants(tree: ast.Module, directory: pathlib.Path) -> dict:
    """A config module's VARIANTS: a dict literal, or another config's (`VARIANTS = other.VARIANTS`)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["VARIANTS"]:
            if isinstance(node.value, ast.Dict):
                return ast.literal_eval(node.value)
            other = directory / f"{getattr(node.value.value, 'id', '')}.py"
            return _variants(ast.parse(other.read_text()), directory) if other.is_file() else {}
    return {}


def differences(a: dict, b: dict) -> list[str]:
    """The keys on which two configs (nested dicts, e.g. a manifest's) differ, each as `key: A -> B` (`absent`
    where one has no such key); tuples and lists of equal items are equal."""
    def norm(value):
        return json.loads(json.dumps(value, default=str))
    fa, fb = flat(norm(a)), flat(norm(b))
    missing = object()

    def shown(value):
        return "absent" if value is missing else repr(value)
    return [f"{key}: {shown(fa.get(key, missing))} -> {shown(fb.get(key, missing))}"
            for key in sorted(set(fa) | set(fb)) if fa.get(key, missing) != fb.get(key, missing)]


def results_relevant(config: dict) -> dict:
    """A config (nested dict) without its RESULTS_NEUTRAL keys, nor an EMPTY_IS_ABSENT key that is empty (the same
    run as one written before that key existed): what identifies a run's results."""
    out = json.loads(json.dumps(config, default=str))
    for key in RESULTS_NEUTRAL + EMPTY_IS_ABSENT:
        *path, last = key.split(".")
        section = out
        for name in path:
            section = section.get(name, {}) if isinstance(section, dict) else {}
        if isinstance(section, dict) and (key in RESULTS_NEUTRAL or section.get(last, None) in ({}, [])):
            section.pop(last, None)
    return out


def named_differences(a: dict, b: dict, shown: int = 4) -> str:
    """`differences` for a message: the first `shown`, and how many more."""
    found = differences(a, b)
    more = f" and {len(found) - shown} more" if len(found) > shown else ""
    return "; ".join(found[:shown]) + more


def parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# Sections whose keys an override may add (sweep axes).
GROWABLE = ("sweep.shapes", "sweep.pretrain_optimizer", "sweep.finetune_optimizer")
EMPTY_IS_ABSENT = GROWABLE + ("sweep.zip",)  # keys that, empty, sweep nothing: a run as if they did not exist


def apply_override(config: ml_collections.ConfigDict, item: str) -> None:
    """Apply one `KEY=VALUE` (KEY dotted, without the `config.` prefix)."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise UserError(f"bad override {item!r}: expected --config.KEY=VALUE")
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            raise UserError(f"unknown config key {'.'.join(parts[:i + 1])!r}")
        node = node[part]
    leaf = parts[-1]
    value = parse_value(text)
    growable = ".".join(parts[:-1]) in GROWABLE
    if not isinstance(node, ml_collections.ConfigDict) or (leaf not in node and not growable):
        raise UserError(f"unknown config key {key!r}")
    if isinstance(value, list):
        value = tuple(value)
    old = node.get(leaf)
    if (isinstance(old, tuple) or growable) and not isinstance(value, tuple):
        value = (value,)  # a single value for a swept axis
    if isinstance(old, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    try:
        if leaf in node:
            node[leaf] = value
        else:
            with node.unlocked():
                node[leaf] = value
    except TypeError:
        raise UserError(f"config key {key!r}: expected a value of type {type(old).__name__}, got {text!r}") from None


def require(ok: bool, key: str, message: str) -> None:
    """The config check of every study: one error naming the offending key."""
    if not ok:
        raise UserError(f"config key {key!r}: {message}")


def positive_int(config, key: str):
    """`config`'s value at dotted `key`, which must be a positive integer."""
    value = config
    for part in key.split("."):
        value = value[part]
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0, key,
            f"must be a positive integer, got {value!r}")
    return value


def finite_number(value) -> bool:
    """A real number (not a bool), finite: what every numeric setting must be before its own range."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# What an optimiser accepts, by hyperparameter: (test, what the error says). Every training phase's section and every
# swept value of one is checked against these, so a run never starts with a value no optimiser can use.
OPTIMIZER_BOUNDS = {
    "lr": (lambda v: v > 0, "must be a positive finite number"),
    "weight_decay": (lambda v: v >= 0, "must be a non-negative finite number"),
    "grad_clip": (lambda v: v >= 0, "must be a non-negative finite number (0: no clipping)"),
    "b1": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "b2": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "eps": (lambda v: v > 0, "must be a positive finite number"),
    "lr_factor": (lambda v: v > 0, "must be a positive finite number"),
    "lr_scale": (lambda v: v > 0, "must be a positive finite number"),
}


def check_optimizer(config, phase: str, zero_lr: bool = False) -> None:
    """The optimiser hyperparameters a training phase's section holds (`lr`, `weight_decay`, `grad_clip`, `b1`,
    `b2`, `eps`, named LR scales): finite and in range. `zero_lr`: an `lr` of 0 means "set by the sweep"."""
    section = config[phase]
    for name, (ok, problem) in OPTIMIZER_BOUNDS.items():
        if name not in section:
            continue
        value = section[name]
        if isinstance(value, (dict, ml_collections.ConfigDict)):  # named scales: each one
            for label, v in value.items():
                require(finite_number(v) and ok(v), f"{phase}.{name}.{label}", f"{v!r}: {problem}")
        elif not (zero_lr and name == "lr" and value == 0):
            require(finite_number(value) and ok(value), f"{phase}.{name}", f"{value!r}: {problem}")


def check_swept_optimizer(key: str, name: str, values) -> None:
    """A swept optimiser hyperparameter's values (`sweep.<phase>_optimizer.<name>`) against its bounds."""
    ok, problem = OPTIMIZER_BOUNDS.get(name, (lambda v: v >= 0, "must be a non-negative finite number"))
    for v in values:
        require(finite_number(v) and ok(v), key, f"{v!r}: {problem}")


# The study kinds (fttrace/engine/runner.py) by `config.study`: the module that names the kind (`KIND`); the language-model
# kinds' modules also check their configs (`validate_config`). Without `study`, a config is of the answer-position
# tasks (PCFG, Tracr), checked by TASK_VALIDATE. Imported when used: they import jax.
STUDY_KINDS = {"stories_twist": "fttrace.stories.study", "canary_unlock": "fttrace.canary.study"}
TASK_STUDY = "fttrace.answer.study"
TASK_VALIDATE = "fttrace.answer.validate"  # its config checks (imported alone: `fttrace config` stays quick)


def study_module(config):
    """The module of `config`'s study kind."""
    name = config.get("study")
    if name not in STUDY_KINDS:
        return importlib.import_module(TASK_STUDY)
    try:
        return importlib.import_module(STUDY_KINDS[name])
    except ImportError as e:
        raise UserError(f"the {name} study needs the story data packages ({e.name or e}): "
                        "pip install 'fttrace[stories]'") from None


def check_checkpoint(config) -> None:
    """The checkpoint section of any study: `every_chunks` >= 0 (0: at each phase's end only), `keep` >= 1,
    `keep_log_spaced` >= 0 (where given)."""
    require("checkpoint" in config, "checkpoint", "missing section")
    for key in ("every_chunks", "keep_log_spaced"):
        value = config.checkpoint.get(key, 0)
        require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"checkpoint.{key}",
                f"must be a non-negative integer, got {value!r}")
    positive_int(config, "checkpoint.keep")


def validate(config: ml_collections.ConfigDict) -> None:
    """Check the config's values with its study kind's own checks (`validate_config` of the kind's module, or of
    `TASK_VALIDATE` for the answer-position tasks); the error names the offending key."""
    if config.get("study") in STUDY_KINDS:
        return study_module(config).validate_config(config)
    return importlib.import_module(TASK_VALIDATE).validate_config(config)


def check_numerics(config) -> None:
    """`model.dtype` (the compute dtype; "auto": bfloat16 on a GPU or TPU, float32 on a CPU, resolved when a run
    starts) and `model.attention` (how attention without weights is computed; "auto": by backend)."""
    require(config.model.get("dtype", "float32") in ("auto", "float32", "bfloat16"), "model.dtype",
            "must be 'auto', 'float32' or 'bfloat16'")
    require(config.model.get("attention", "auto") in ("auto", "einsum", "fused"), "model.attention",
            "must be 'auto', 'einsum' or 'fused'")


def to_json(config: ml_collections.ConfigDict) -> str:
    """Canonical JSON of a config (sorted keys), used in the manifest and to recognise a run's config."""
    return json.dumps(config.to_dict(), sort_keys=True, default=str)
