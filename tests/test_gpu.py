"""Checks that need a GPU (marked `gpu`; skipped where none is present, run by benchmarks/device_check.sh).

  bf16 against f32  the same members trained in bfloat16 compute and in float32 end at nearly the same loss
  auto and fused    "auto" computes in bfloat16; attention without weights runs cuDNN's fused kernel under vmap, with
                    the einsum form's outputs and gradients; the device reports the memory groups are sized against
  every local GPU   the member axis sharded over all local GPUs gives what one GPU gives
  memory plan       the compiler's plan of the reference shape's training program up to 4,096 members, nothing
                    materialised
"""
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
    _, f32 = trained(["model.dtype=float32"])
    _, bf16 = trained([])  # "auto": bfloat16 on a GPU, fused attention, the group sized from the device's memory
    loss32, loss16 = f32[-1][1]["pt_loss"], bf16[-1][1]["pt_loss"]
    assert np.isfinite(loss16).all()
    np.testing.assert_allclose(loss16, loss32, rtol=0.05, atol=0.02)  # bf16 has 8 bits of mantissa


def test_auto_dtype_fused_attention_and_device_memory_on_the_gpu():
    import jax
    import jax.numpy as jnp
    from fttrace.engine import memory
    from fttrace.model.transformer import ModelConfig, einsum_attention, fused_attention
    assert ModelConfig(vocab_size=8, max_len=4, dtype="auto").dtype == "bfloat16"
    assert memory.device_bytes_limit() > 0
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(key, (8, 4, 64, 4, 32), jnp.bfloat16) for key in keys)  # [members, B, T, H, hd]
    fused = jax.jit(jax.vmap(lambda q, k, v: fused_attention(q, k, v, True)))
    einsum = jax.jit(jax.vmap(lambda q, k, v: einsum_attention(q, k, v, True)[0]))
    assert "cudnn" in fused.lower(q, k, v).compile().as_text().lower()
    np.testing.assert_allclose(np.float32(fused(q, k, v)), np.float32(einsum(q, k, v)), rtol=2e-2, atol=2e-2)
    grad = lambda f: jax.grad(lambda q: jnp.sum(f(q, k, v).astype(jnp.float32) ** 2))(q)  # noqa: E731
    np.testing.assert_allclose(np.float32(grad(fused)), np.float32(grad(einsum)), rtol=5e-2, atol=5e-2)


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
    """The compiler's plan of the bf16 reference shape's training program at 256 to 4,096 members, from abstract
    values (nothing materialised): 256 members fit an 80 GB H100, and the plan grows with the members."""
    import jax
    from fttrace.bench import device_check
    from fttrace.bench import throughput as bench
    limit = jax.devices()[0].memory_stats()["bytes_limit"]
    setup = bench.setup_from_config(config_lib.load(str(pathlib.Path(SMOKE).parent / "bench.py"), [
        "shape=ref", "model.dtype=bfloat16", "members=(4096,)", "steps=1"]))
    plan = {members: device_check.memory_plan(setup, members) for members in (256, 1024, 4096)}
    assert setup.initial is None  # no member was initialised on the device
    assert plan[256]["fits"] or limit < 70 * 2**30, plan
    assert plan[256]["planned_mb"] <= plan[1024]["planned_mb"] <= plan[4096]["planned_mb"]
