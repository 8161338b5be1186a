"""What the run trees of the LM studies share (stories: `lm/study.py`, canaries: `canary/study.py`).

  config checks   `check_phase` for one phase section (steps, batch size, schedule, warmup, eval steps, member
                  batch) and `check_model`, through the checks every study uses (config.require, positive_int)
  members         the model of a config, the untrained members of pretraining
                  (`model_config`, `fresh_members`, `size_line`)
  a phase         trained in chunks up to each of its eval steps, every member measured at each (`train_with_evals`)
  a finished one  its results part and its members' final parameters (WORKDIR/checkpoints/<phase>.msgpack); a
                  rerun restores it instead of training (`run_phase`: resume at phase granularity)
  the workdir     a manifest with the config's fingerprint: a rerun of the same config resumes, another config is
                  refused unless overwrite (`run_in_workdir`)
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from etils import epath

from fttrace.checkpoint import run_fingerprint
from fttrace.config import named_differences, positive_int, require
from fttrace.errors import UserError
from fttrace.lm.steps import train_chunk
from fttrace.model import ModelConfig
from fttrace.results import COMPLETE, MANIFEST_FILE, ResultsStore, long_frame, manifest, write_json
from fttrace.train import init_members, param_count


# ---------------------------------------------------------------- config checks


def check_phase(config, phase: str) -> None:
    """One phase section: steps, batch size, schedule, warmup, eval steps rising from 0 to steps, member batch."""
    p = config[phase]
    for key in ("steps", "batch_size"):
        positive_int(config, f"{phase}.{key}")
    require(p.schedule in ("constant", "cosine"), f"{phase}.schedule", "must be 'constant' or 'cosine'")
    require(0 <= p.warmup_steps <= p.steps, f"{phase}.warmup_steps", f"must be in [0, {p.steps}]")
    steps = tuple(p.eval_steps)
    require(len(steps) >= 2 and steps[0] == 0 and steps[-1] == p.steps and all(
        isinstance(s, int) and a < s for a, s in zip(steps, steps[1:])), f"{phase}.eval_steps",
        f"must rise from 0 to {phase}.steps ({p.steps}), got {steps!r}")
    value = p.get("member_batch", 0)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, f"{phase}.member_batch",
            f"must be a non-negative integer (0: all members at once), got {value!r}")


def check_model(config) -> None:
    """The model section of an LM study: positive sizes, heads dividing the width, float32 (the decoder's)."""
    m = config.model
    for key in ("d_model", "n_layers", "n_heads", "max_len"):
        positive_int(config, f"model.{key}")
    require(m.d_model % m.n_heads == 0, "model.n_heads", "must divide model.d_model")
    require(m.get("dtype", "float32") == "float32", "model.dtype", "only float32 is supported by the LM decoder")
    positive_int(config, "eval.batch_size")
    value = config.eval.get("member_batch", 0)
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0, "eval.member_batch",
            f"must be a non-negative integer (0: all members at once), got {value!r}")


def model_config(config, vocab_size: int) -> ModelConfig:
    m = config.model
    return ModelConfig(vocab_size=vocab_size, max_len=m.max_len, d_model=m.d_model, n_layers=m.n_layers,
                       n_heads=m.n_heads, d_mlp=m.get("d_mlp", 0))


def fresh_members(config, model_cfg: ModelConfig, seeds):
    """The untrained members of the pretraining phase, one per entry of `seeds`, at `pretrain.lr`."""
    seeds = np.asarray(seeds)
    return init_members(model_cfg, config.pretrain, config.seed, seeds, np.full(len(seeds), config.pretrain.lr))


def size_line(state) -> str:
    return f"model: {param_count(jax.tree.map(lambda x: x[0], state.params)):,} parameters"


# ---------------------------------------------------------------- one phase


def train_with_evals(model, cfg, device_corpus, ranges, state, measure: Callable, report: Callable | None = None):
    """Train `state` (all members) on their document ranges [M, 2] up to each of `cfg.eval_steps`.

    measure(params, step, final) -> {metric: [M]} is called at every eval step (final: the phase's last);
    report(step, metrics, seconds) after it. Returns (state, records [(step, metrics)], status per member); the
    last record also holds `diverged_step`.
    """
    ranges = np.asarray(ranges)
    lo, hi = jnp.asarray(ranges[:, 0], jnp.int32), jnp.asarray(ranges[:, 1], jnp.int32)
    chunk = jax.jit(train_chunk(model, cfg), donate_argnums=0)
    records, done, t0 = [], 0, time.perf_counter()
    for target in tuple(cfg.eval_steps):
        loss = np.full(len(ranges), np.nan)
        if target > done:
            state, loss = chunk(state, device_corpus, lo, hi, jnp.int32(target - done))
            loss = np.asarray(loss)
            done = target
        metrics = {"train_loss": loss, **measure(state.params, done, done == cfg.steps)}
        records.append((done, metrics))
        if report is not None:
            report(done, metrics, time.perf_counter() - t0)
    diverged_step = np.asarray(state.diverged_step)
    records[-1][1]["diverged_step"] = diverged_step.astype(np.float64)
    return state, records, np.where(diverged_step >= 0, "diverged", "ok")


def params_path(workdir, phase: str) -> epath.Path:
    return epath.Path(workdir) / "checkpoints" / f"{phase}.msgpack"


def read_saved(workdir, phase: str) -> dict:
    """A finished phase's saved members: {"params", "diverged", "diverged_step"}, member-stacked numpy arrays."""
    path = params_path(workdir, phase)
    try:
        return flax.serialization.msgpack_restore(path.read_bytes())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read the parameters of phase {phase} ({path}): {e}") from None


def run_phase(workdir, store: ResultsStore, phase: str, members: pd.DataFrame, make_state: Callable,
              train: Callable, say: Callable = lambda message: None):
    """Train a phase (or restore it when a previous run finished it); returns its final state.

    train(state) -> (state, records, status); its records become the phase's part (rows of `members`).
    """
    path = params_path(workdir, phase)
    like = make_state()
    if store.has_part(phase) and path.exists():
        say(f"{phase}: finished in a previous run, restored")
        saved = read_saved(workdir, phase)
        return like.replace(params=flax.serialization.from_state_dict(like.params, saved["params"]),
                            diverged=jnp.asarray(saved["diverged"]), diverged_step=jnp.asarray(saved["diverged_step"]))
    state, records, status = train(like)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.msgpack_serialize(dict(
        params=flax.serialization.to_state_dict(jax.device_get(state.params)),
        diverged=np.asarray(state.diverged), diverged_step=np.asarray(state.diverged_step)))
    tmp = path.parent / f".{path.name}.tmp"
    tmp.write_bytes(blob)
    tmp.replace(path)
    store.write_part(phase, long_frame(members.drop(columns=["from_pretrain"], errors="ignore"), phase,
                                       records, status))
    return state


# ---------------------------------------------------------------- the workdir


def run_in_workdir(config, workdir, study: str, run: Callable, overwrite: bool = False,
                   fresh: tuple = ("checkpoints",)) -> epath.Path:
    """Prepare `workdir` for `config` (refusing another config's run unless `overwrite`), call run() -> results
    path, and keep the manifest (config, versions, devices, fingerprint, status, wall time) up to date.

    fresh: the workdir's folders that `overwrite` removes with the results (a study whose prepared data depends
    on its config adds that data's folder).
    """
    workdir = epath.Path(workdir)
    store = ResultsStore(workdir)
    store.prepare()
    identity = run_fingerprint({"config": json.loads(json.dumps(config.to_dict(), default=str)), "study": study})
    manifest_path = workdir / MANIFEST_FILE
    if manifest_path.exists() and not overwrite:
        previous = json.loads(manifest_path.read_text())
        if previous.get("fingerprint") != identity:
            changed = named_differences(previous.get("config", {}), config.to_dict())
            raise UserError(f"workdir {workdir} holds a run of another config ({changed}); choose another workdir or "
                            "start over with --overwrite")
    if overwrite:
        store.clear()
        for folder in fresh:
            if (workdir / folder).exists():
                (workdir / folder).rmtree()
    store.remove_temporaries()
    started = time.time()
    devices = [str(d) for d in jax.devices()]
    write_json(manifest_path, manifest(config.to_dict(), devices, fingerprint=identity, status="running"))
    results = run()
    write_json(manifest_path, manifest(config.to_dict(), devices, fingerprint=identity, status=COMPLETE,
                                       wall_s=round(time.time() - started, 3)))
    return results
