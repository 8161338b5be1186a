"""Checks that need a GPU (marked `gpu`; skipped where none is present, run by benchmarks/device_check.sh).

  bf16 against f32  the same members trained in bfloat16 compute and in float32 end at nearly the same loss
  every local GPU   the member axis sharded over all local GPUs gives what one GPU gives
  memory plan       the largest member count of the reference shape whose training program fits the GPU's memory,
                    written to $FTTRACE_DEVICE_OUT/memory_plan.json when that variable names a folder
"""
import json
import os
import pathlib

import numpy as np
import pytest

from fttrace import config as config_lib
from helpers import NO_EVALS, SMOKE, TINY

pytestmark = pytest.mark.gpu


def trained(overrides, placement=None):
    """Pretraining of a small sweep (16 members) through the phase loop; (final state as numpy, records)."""
    import jax
    from fttrace.answer.sweep import build_groups
    from fttrace.answer.tasks import queries
    from fttrace.answer.tasks.registry import build_task
    from fttrace.engine.train import AnswerObjective, PhaseLoop, data_spec, eval_sets_for, init_members
    config = config_lib.load(SMOKE, TINY + [NO_EVALS, "sweep.seeds=16", "pretrain.steps=200",
                                            "pretrain.eval_every=100", *overrides])
    (group,) = build_groups(config)
    task = build_task(config)
    pt = group.pretrain
    sets = eval_sets_for(task, 256, config.eval.seed)
    state = init_members(group.model, config.pretrain, 0, pt.seed.to_numpy(), pt.pretrain_lr.to_numpy())
    data = data_spec(queries.pretraining(task, pt.prior.to_numpy()), np.zeros(len(pt)))
    sharding = None
    if placement is not None:
        state, data, sets = placement.place(state), placement.place(data), placement.replicate(sets)
        sharding = placement.members
    loop = PhaseLoop(group.model, AnswerObjective(task), config.pretrain, sets, sharding=sharding)
    state, records = loop.run(state, data)
    rows = np.arange(len(pt))
    return jax.tree.map(lambda x: np.asarray(x)[rows], state.params), [
        (step, {k: np.asarray(v)[rows] for k, v in metrics.items()}) for step, metrics in records]


def test_bfloat16_compute_tracks_float32():
    _, f32 = trained([])
    _, bf16 = trained(["model.dtype=bfloat16"])
    loss32, loss16 = f32[-1][1]["pt_loss"], bf16[-1][1]["pt_loss"]
    assert np.isfinite(loss16).all()
    np.testing.assert_allclose(loss16, loss32, rtol=0.05, atol=0.02)  # bf16 has 8 bits of mantissa


def test_members_sharded_over_every_local_gpu_equal_one_gpu():
    import jax
    from fttrace.engine.placement import Placement
    gpus = jax.local_devices()
    if len(gpus) < 2:
        pytest.skip("one GPU: nothing to shard over")
    one, _ = trained([], Placement(gpus[:1]))
    every, _ = trained([], Placement(gpus))
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(every)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_memory_plan_of_the_reference_shape():
    """The largest power-of-two member count from 256 up to 4,096 whose bf16 training program for the reference
    shape fits the memory the GPU reports, by the compiler's plan; at least the 256 an 80 GB H100 was measured to
    hold."""
    import jax
    from fttrace.bench import throughput as bench
    limit = jax.devices()[0].memory_stats()["bytes_limit"]
    setup = bench.setup_from_config(config_lib.load(str(pathlib.Path(SMOKE).parent / "bench.py"), [
        "shape=ref", "model.dtype=bfloat16", "members=(4096,)", "steps=1"]))
    plan = {}
    members = 256
    while members <= 4096:
        state = setup.initial_state(members)
        data, shared = setup.data(members)
        compiled, _ = setup.program("vmap", state, data, shared)
        plan[members] = bench.program_memory_mb(compiled)
        if plan[members] * 2**20 > limit:
            break
        members *= 2
    fits = max((m for m, mb in plan.items() if mb * 2**20 <= limit), default=0)
    out = os.environ.get("FTTRACE_DEVICE_OUT")
    if out:
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        (pathlib.Path(out) / "memory_plan.json").write_text(json.dumps(dict(
            device=bench.device_name(), bytes_limit=limit, planned_mb=plan, largest_fitting=fits), indent=1))
    assert fits >= 256 or limit < 70 * 2**30, plan
