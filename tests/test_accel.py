"""Fast by default on an accelerator, unchanged on a CPU: the dtype "auto", the fused attention path and the
training groups sized from device memory, their logic checked on the CPU (the GPU checks are in test_gpu.py)."""
import io
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fttrace import config as config_lib
from fttrace.engine import memory, train
from fttrace.engine.progress import Progress
from fttrace.engine.runner import resolved_config, run_identity
from fttrace.errors import UserError
from fttrace.model.transformer import (ModelConfig, Transformer, attention_path, einsum_attention, fused_attention,
                                       init_params, resolve_dtype)
from helpers import NO_EVALS, ROOT, SMOKE, TINY, tiny_config


# ---------------------------------------------------------------- dtype "auto"

def test_auto_is_bfloat16_on_an_accelerator_and_float32_on_a_cpu():
    assert [resolve_dtype("auto", b) for b in ("gpu", "tpu", "cpu")] == ["bfloat16", "bfloat16", "float32"]
    assert resolve_dtype("float32", "gpu") == "float32" and resolve_dtype("bfloat16", "cpu") == "bfloat16"
    assert [attention_path("auto", b) for b in ("gpu", "tpu", "cpu")] == ["fused", "fused", "einsum"]
    assert attention_path("einsum", "gpu") == "einsum"
    assert jax.default_backend() == "cpu"
    assert ModelConfig(vocab_size=8, max_len=4, dtype="auto").dtype == "float32"


def test_a_run_records_the_resolved_dtype_and_a_cpu_run_is_the_float32_run():
    config = tiny_config(NO_EVALS)
    assert config.model.dtype == "auto"
    on_gpu, on_cpu = resolved_config(config, "gpu"), resolved_config(config)
    assert on_gpu.model.dtype == "bfloat16" and on_cpu.model.dtype == "float32"
    assert config.model.dtype == "auto"  # the given config is left as it is
    # the identity (and so the checkpoints' fingerprint) of a CPU run is that of the float32 run it always was
    assert run_identity(on_cpu) == run_identity(tiny_config(NO_EVALS, "model.dtype='float32'"))
    assert run_identity(on_gpu) != run_identity(on_cpu)
    explicit = tiny_config(NO_EVALS, "model.dtype='bfloat16'")
    assert resolved_config(explicit) is explicit


@pytest.mark.parametrize("spec", ["stories_twist:gpu", "canary_unlock:gpu"])
def test_every_gpu_variant_computes_in_auto_and_sizes_its_groups_from_memory(spec):
    config = config_lib.load(spec)
    assert config.model.dtype in ("auto", "bfloat16") and config.model.get("attention", "auto") == "auto"
    phases = [name for name in config if isinstance(config[name], type(config)) and "member_batch" in config[name]
              and "steps" in config[name]]
    assert phases and all(config[name].member_batch == 0 for name in phases)


def test_the_defaults_compute_in_auto():
    assert config_lib.load(str(ROOT / "configs" / "default.py")).model.dtype == "auto"
    for spec in ("stories_twist", "canary_unlock"):
        assert config_lib.load(spec + ":tiny").model.dtype == "auto"


@pytest.mark.parametrize("override, key", [("model.dtype='float16'", "model.dtype"),
                                           ("model.attention='flash'", "model.attention")])
def test_a_bad_dtype_or_attention_form_is_refused_by_name(override, key):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        config_lib.load(SMOKE, TINY + [override])


# ---------------------------------------------------------------- attention

def qkv(dtype, tq=9, t=9, batch=3, heads=2, hd=8, members=None):
    lead = (members,) if members else ()
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    q = jax.random.normal(keys[0], lead + (batch, tq, heads, hd), jnp.float32).astype(dtype)
    k, v = (jax.random.normal(key, lead + (batch, t, heads, hd), jnp.float32).astype(dtype) for key in keys[1:])
    return q, k, v


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("last_query_only", [False, True])
def test_dot_product_attention_gives_the_einsum_forms_heads(dtype, tolerance, causal, last_query_only):
    q, k, v = qkv(dtype, tq=1 if last_query_only else 9)
    causal = causal and not last_query_only  # as Attention does: the last query sees every position
    einsum, weights = einsum_attention(q, k, v, causal)
    fused = fused_attention(q, k, v, causal, "xla")
    assert fused.dtype == einsum.dtype == dtype and fused.shape == einsum.shape
    np.testing.assert_allclose(np.float32(fused), np.float32(einsum), rtol=tolerance, atol=tolerance)
    if causal:  # the mask is applied: position 0 reads itself only
        np.testing.assert_allclose(np.float32(fused[:, 0]), np.float32(v[:, 0]), rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", [(jnp.float32, 1e-5), (jnp.bfloat16, 2e-2)])
def test_fused_attention_under_vmap_over_members(dtype, tolerance):
    q, k, v = qkv(dtype, members=4)
    fused = jax.jit(jax.vmap(lambda q, k, v: fused_attention(q, k, v, True)))(q, k, v)
    for m in range(4):
        np.testing.assert_allclose(np.float32(fused[m]), np.float32(einsum_attention(q[m], k[m], v[m], True)[0]),
                                   rtol=tolerance, atol=tolerance)


@pytest.mark.parametrize("dtype, tolerance", [("float32", 1e-5), ("bfloat16", 5e-2)])
@pytest.mark.parametrize("answer_only", [False, True])
def test_the_model_through_fused_attention_gives_the_einsum_models_logits_and_gradients(dtype, tolerance,
                                                                                       answer_only):
    einsum = ModelConfig(vocab_size=20, max_len=12, d_model=16, n_layers=2, n_heads=2, dtype=dtype,
                         attention="einsum")
    fused = ModelConfig(**{**einsum.__dict__, "attention": "fused"})
    params = jax.vmap(lambda key: init_params(einsum, key))(jax.random.split(jax.random.PRNGKey(1), 3))
    tokens = jax.random.randint(jax.random.PRNGKey(2), (3, 5, 12), 0, 20)

    def loss(cfg):
        def one(p, x):
            logits = Transformer(cfg).apply({"params": p}, x, answer_only=answer_only)
            return jnp.mean(logits ** 2), logits
        return jax.jit(jax.vmap(jax.value_and_grad(one, has_aux=True)))(params, tokens)

    ((_, a), ga), ((_, b), gb) = loss(einsum), loss(fused)
    assert a.dtype == b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, rtol=tolerance, atol=tolerance)
    for x, y in zip(jax.tree.leaves(gb), jax.tree.leaves(ga)):
        np.testing.assert_allclose(x, y, rtol=tolerance, atol=tolerance * 1e-1)
    _, captured = Transformer(fused).apply({"params": jax.tree.map(lambda x: x[0], params)}, tokens[0],
                                           capture=True)
    assert captured["attn_weights"].shape == (2, 5, 2, 12, 12)  # weights asked for: the einsum form computes them


# ---------------------------------------------------------------- groups sized from memory

GB = 1e9


def test_batch_for_memory_is_the_largest_power_of_two_that_fits():
    # 80 GB x 0.8 = 64 GB; 1 GB shared; 256 members x 1 MB held: ~62.7 GB for temporaries
    assert memory.batch_for_memory(256, 1 * GB, 1e6, 0.1 * GB, 80 * GB) == 256  # 627 would fit: capped at 256
    assert memory.batch_for_memory(256, 1 * GB, 1e6, 1 * GB, 80 * GB) == 32  # 62 fit
    assert memory.batch_for_memory(256, 1 * GB, 1e6, 1 * GB, 80 * GB, margin=0.5) == 32  # 38 fit
    assert memory.batch_for_memory(256, 1 * GB, 1e6, 1 * GB, 80 * GB, margin=0.4) == 16  # 30 fit
    assert memory.batch_for_memory(256, 1 * GB, 1e6, 1 * GB, 140 * GB) == 64  # 110 fit (an H200's)
    assert memory.batch_for_memory(256, 1 * GB, 0.3 * GB, 1 * GB, 80 * GB) == 1  # the held state alone overflows
    assert memory.batch_for_memory(5, 0, 1e6, 1e6, 80 * GB) == 8  # covers 5 members (member_batch_size takes 5)
    assert memory.batch_for_memory(1, 0, 1e6, 1e6, 80 * GB) == 1
    assert memory.batch_for_memory(64, 0, 0, 0, 80 * GB) == 64  # nothing temporary


def test_the_cpu_reports_no_memory_and_keeps_the_activation_budget():
    config = tiny_config(NO_EVALS)
    assert memory.device_bytes_limit() is None and train.sized_by_memory(config.pretrain) is None


def test_members_that_cannot_fit_are_refused_before_anything_is_allocated():
    from fttrace.answer.sweep import build_groups
    config = tiny_config(NO_EVALS)
    (group,) = build_groups(config)
    phase = config.pretrain
    one = train.init_members(group.model, phase, 0, [0], [1e-3])
    per_member = memory.tree_bytes(one)
    assert per_member > 0 and memory.host_bytes_limit() > 2**30
    # The same members against a limit they overflow: one line naming the count, nothing made.
    with pytest.raises(UserError, match=r"^3 members' parameters and optimiser state need .* GiB, more than 80% of"):
        memory.require_room(jax.eval_shape(lambda: train.init_members(group.model, phase, 0, [0, 1, 2], [1e-3] * 3)),
                            "3 members' parameters and optimiser state", limit=int(2.5 * per_member / memory.MARGIN))
    memory.require_room(one, "1 member", limit=int(2 * per_member / memory.MARGIN))  # fits: no error


@pytest.mark.slow
def test_a_sweep_too_large_for_the_machine_is_refused_with_one_line(tmp_path, capsys):
    from fttrace import cli
    from fttrace.answer.sweep import build_groups
    config = tiny_config(NO_EVALS)
    (group,) = build_groups(config)
    per_member = memory.tree_bytes(jax.eval_shape(lambda: train.init_members(group.model, config.pretrain, 0, [0],
                                                                               [1e-3])))
    seeds = 4 * memory.host_bytes_limit() // per_member  # their states alone: four times this machine's memory
    code = cli.main(["run", SMOKE, "--workdir", str(tmp_path / "w"), *(f"--config.{o}" for o in TINY),
                     f"--config.{NO_EVALS}", f"--config.sweep.seeds={seeds}"])
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("fttrace: error:")]
    assert code == 2 and len(errors) == 1 and errors == err[-1:], err  # refused, not killed by the kernel's OOM killer
    assert not [line for line in err if "Traceback" in line]
    err = errors
    assert re.match(rf"fttrace: error: .*{seeds:,} members' parameters and optimiser state need [\d,.]+ GiB, more "
                    r"than 80% of the [\d,.]+ GiB this machine offers: run fewer members at once", err[0]), err


class Pretraining:
    """A tiny pretraining phase of 8 members through the PhaseLoop."""

    def __init__(self):
        from fttrace.answer.sweep import build_groups
        from fttrace.answer.tasks.registry import build_task
        self.config = tiny_config(NO_EVALS, "sweep.seeds=8", "pretrain.steps=4", "pretrain.eval_every=2",
                                  "eval.examples=16")
        (self.group,) = build_groups(self.config)
        self.task = build_task(self.config)
        self.sets = train.eval_sets_for(self.task, 16, self.config.eval.seed)

    def inputs(self):
        from fttrace.answer.tasks import queries
        pt = self.group.pretrain
        state = train.init_members(self.group.model, self.config.pretrain, 0, pt.seed.to_numpy(),
                                   pt.pretrain_lr.to_numpy())
        return state, train.data_spec(queries.pretraining(self.task, pt.prior.to_numpy()), np.zeros(len(pt)))

    def loop(self):
        return train.PhaseLoop(self.group.model, train.AnswerObjective(self.task), self.config.pretrain, self.sets)


@pytest.fixture(scope="module")
def pretraining():
    return Pretraining()


def test_the_compiled_plan_scales_to_the_group_that_fits(pretraining):
    state, data = pretraining.inputs()
    program = jax.jit(train.train_steps(Transformer(pretraining.group.model), train.AnswerObjective(pretraining.task),
                                        pretraining.config.pretrain), donate_argnums=0)
    plan = memory.planned_bytes(program, state, data, pretraining.sets, 2)
    assert plan["temp"] > 0 and plan["argument"] > plan["shared"] > 0
    per_member = memory.planned_bytes(program, state, data, pretraining.sets, 4)["temp"] / 4
    assert per_member == pytest.approx(plan["temp"] / 2, rel=0.5)  # temporaries grow with the members computed
    # a device with room for the shared inputs and about two members' temporaries besides every member's state
    held = plan["argument"] + plan["output"] - plan["alias"] - plan["shared"]
    tight = (plan["shared"] + 8 * held / 2 + 2.5 * plan["temp"] / 2) / memory.MARGIN
    assert memory.measured_member_batch(program, state, data, pretraining.sets, tight, probe=2) == 2
    assert memory.measured_member_batch(program, state, data, pretraining.sets, 1e12) == 8


def test_a_phase_on_a_device_that_reports_memory_sizes_its_member_batch_and_shows_it(pretraining, monkeypatch):
    state, data = pretraining.inputs()
    plain = pretraining.loop()
    assert plain.bytes_limit is None  # the CPU: the activation budget, as before
    assert plain.member_batch == train.train_member_batch(pretraining.group.model, pretraining.config.pretrain)
    sized = []
    monkeypatch.setattr(memory, "device_bytes_limit", lambda device=None: 123)
    monkeypatch.setattr(memory, "measured_member_batch", lambda *a: sized.append(a[-1]) or 2)
    loop = pretraining.loop()
    assert loop.bytes_limit == 123
    batches = []
    _, records = loop.run(state, data, on_chunk=lambda *a, batch, **k: batches.append(batch))
    assert sized == [123] and loop.member_batch == 2 and batches == [2, 2] and [s for s, _ in records] == [0, 2, 4]
    # a phase whose config sets member_batch keeps it
    fixed = pretraining.config.pretrain.copy_and_resolve_references()
    fixed.member_batch = 4
    assert train.PhaseLoop(pretraining.group.model, train.AnswerObjective(pretraining.task), fixed,
                           pretraining.sets).bytes_limit is None


def test_the_progress_line_shows_the_member_batch_where_members_train_in_batches():
    stream = io.StringIO()
    with Progress(stream=stream).phase("group 0 pretrain", 256) as on_chunk:
        on_chunk(50, 100, 2.0, batch=64)
        on_chunk(100, 100, 2.0, batch=256)
    first, second = [line for line in stream.getvalue().strip().splitlines() if "step" in line][:2]
    assert "in batches of 64" in first and "batches" not in second
