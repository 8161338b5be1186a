import numpy as np
import pandas as pd
import pytest

from fttrace.engine.runner import run_study
from helpers import NO_EVALS, SMOKE, TINY, tiny_config


def run(tmp_path, name, *overrides):
    return pd.read_parquet(run_study(tiny_config(NO_EVALS, *overrides), tmp_path / name, quiet=True))


@pytest.fixture(scope="module")
def sweep_and_alone(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    # 8 pretraining members: seeds 0-3 x (a sane LR, an LR that makes members diverge).
    sweep = run(tmp, "sweep", "sweep.seeds=4", "sweep.pretrain_lr=(1e-3,1e30)")
    alone = run(tmp, "alone", "sweep.seeds=1", "sweep.seed_offset=2", "sweep.pretrain_lr=(1e-3,)")
    return sweep, alone


def test_a_sweep_grown_by_seeds_in_another_workdir_names_and_trains_its_members_as_one_sweep(sweep_and_alone,
                                                                                              tmp_path):
    sweep, _ = sweep_and_alone
    grown = run(tmp_path, "grown", "sweep.seeds=2", "sweep.seed_offset=2", "sweep.pretrain_lr=(1e-3,1e30)")
    later = sweep[sweep.seed >= 2]
    keys = ["member", "phase", "step", "metric"]
    assert set(grown.member) == set(later.member) and set(grown.member).isdisjoint(sweep[sweep.seed < 2].member)
    inside, apart = later.set_index(keys).value.sort_index(), grown.set_index(keys).value.sort_index()
    assert list(inside.index) == list(apart.index)
    acc = inside.index.get_level_values("metric").str.endswith("acc")
    finite = np.isfinite(inside.to_numpy())
    np.testing.assert_allclose(apart[~acc & finite].to_numpy(), inside[~acc & finite].to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(apart[acc].to_numpy(), inside[acc].to_numpy(), atol=1.5 / 64)


def test_member_alone_equals_member_inside_a_sweep_of_8(sweep_and_alone):
    sweep, alone = sweep_and_alone
    assert sweep[sweep.phase == "pretrain"].member.nunique() == 8
    keys = ["phase", "step", "metric"]
    inside = sweep[(sweep.seed == 2) & (sweep.pretrain_lr == 1e-3)].set_index(keys).value.sort_index()
    single = alone.set_index(keys).value.sort_index()
    assert list(inside.index) == list(single.index)
    acc = inside.index.get_level_values("metric").str.endswith("acc")
    np.testing.assert_allclose(single[~acc].to_numpy(), inside[~acc].to_numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(single[acc].to_numpy(), inside[acc].to_numpy(), atol=1.5 / 64)


def test_diverged_members_are_frozen_and_flagged_without_touching_neighbours(sweep_and_alone):
    sweep, _ = sweep_and_alone
    bad = sweep[sweep.pretrain_lr == 1e30]
    good = sweep[sweep.pretrain_lr == 1e-3]
    assert (bad.status == "diverged").all() and (good.status == "ok").all()
    steps = bad[(bad.metric == "diverged_step") & (bad.phase == "pretrain")].value
    assert ((steps >= 0) & (steps < 20)).all()
    # Children of a diverged parent stay diverged; healthy members have finite metrics throughout.
    assert (bad[bad.phase == "finetune"].status == "diverged").all()
    assert np.isfinite(good[good.metric.isin(["pt_loss", "ft_loss"])].value).all()


def test_results_schema(sweep_and_alone):
    sweep, _ = sweep_and_alone
    for column in ("member", "parent", "phase", "step", "metric", "value", "status", "seed", "pretrain_lr",
                   "prior", "finetune_lr", "spurious"):
        assert column in sweep.columns
    pt, ft = sweep[sweep.phase == "pretrain"], sweep[sweep.phase == "finetune"]
    assert pt.parent.isna().all() and ft.finetune_lr.notna().all()
    assert set(ft.parent) == set(pt.member)
    assert set(pt.step) == {0, 10, 20} and set(ft.step) == {0, 10}
    assert {"pt_acc", "ft_acc", "pt_loss", "ft_loss", "train_loss"} <= set(sweep.metric)


@pytest.mark.slow
def test_pretraining_learns_the_counter(tmp_path):
    # The counter of O_PT alone (no other operands to read apart): 400 steps suffice.
    frame = run(tmp_path, "learn", "task.other_operands=()", "model.d_model=32", "model.n_heads=2", "model.d_mlp=64",
                "model.n_layers=2",
                "pretrain.steps=400", "pretrain.eval_every=400", "pretrain.batch_size=32",
                "pretrain.warmup_steps=40", "sweep.pretrain_lr=(3e-3,)", "sweep.seeds=2", "eval.examples=512")
    final = frame[(frame.phase == "pretrain") & (frame.metric == "pt_acc") & (frame.step == 400)]
    assert len(final) == 2
    assert (final.value >= 0.95).all(), final.value.tolist()


class CriterionPhase:
    """A tiny pretraining phase with a stopping criterion on held-out C_PT, run directly through PhaseLoop."""

    def __init__(self, steps, batch_size, examples, **phase):
        from fttrace.answer.sweep import build_groups
        from fttrace.answer.tasks.registry import build_task
        from fttrace.engine.train import eval_sets_for
        config = tiny_config("model.d_model=32", "model.d_mlp=64", f"pretrain.steps={steps}",
                             "pretrain.eval_every=20", f"pretrain.batch_size={batch_size}", f"eval.examples={examples}")
        # The LR must not depend on the budget (a constant schedule), so that shorter runs are prefixes of longer ones.
        self.section = config.pretrain.copy_and_resolve_references()
        self.section.update(schedule="constant", warmup_steps=0, **phase)
        (self.group,) = build_groups(config)
        self.task = build_task(config)
        self.sets = eval_sets_for(self.task, config.eval.examples, config.eval.seed)

    def run(self, lrs, weights, seeds=None, compact=True, stop=None, measure=None, on_chunk=None):
        """(final state, records, the member-axis widths of the chunks); `stop`: PhaseLoop's host-side rule,
        `measure` its host-side measurements."""
        from fttrace.answer.tasks import queries
        from fttrace.engine.train import AnswerObjective, PhaseLoop, data_spec, init_members
        n = len(lrs)
        state = init_members(self.group.model, self.section, 0, np.arange(n) if seeds is None else seeds, lrs)
        data = data_spec(queries.reft(self.task, n), np.zeros(n), criterion={"pt": weights})
        loop = PhaseLoop(self.group.model, AnswerObjective(self.task), self.section, self.sets, compact=compact,
                         stop=stop, measure=measure)
        return loop.run(state, data, on_chunk=on_chunk) + (loop.widths,)


def leaves(tree, rows):
    import jax
    return jax.tree.leaves(jax.tree.map(lambda x: np.asarray(x)[rows], tree))


@pytest.mark.slow
def test_training_to_a_criterion_stops_each_member_at_its_step_and_leaves_the_others_as_alone():
    # Members train one at a time, as a member alone does.
    phase = CriterionPhase(200, 32, 256, target=0.6, member_batch=1)
    # Member 0 learns C_PT and stops once its held-out C_PT reaches 0.6; member 1 has a zero criterion weight.
    state, records, _ = phase.run([3e-3, 3e-3], [1.0, 0.0])
    steps = np.asarray([s for s, _ in records])
    pt = np.asarray([np.asarray(m["pt_acc"]) for _, m in records])  # [evals, members]
    first = steps[np.argmax(pt[:, 0] >= 0.6)]
    assert pt[:, 0].max() >= 0.6 and first > 0
    stop = np.asarray(state.stop_step)
    assert stop[0] == first and stop[1] == -1 and bool(state.stopped[0]) and not bool(state.stopped[1])
    after = steps >= first
    assert (pt[after, 0] == pt[after][0, 0]).all()  # frozen from its stop on
    assert np.isnan([np.asarray(m["train_loss"])[0] for s, m in records if s > first]).all()
    assert not np.isnan(np.asarray(records[-1][1]["train_loss"])[1])
    # Stopping one member leaves the other's arithmetic as it is when trained alone.
    alone, alone_records, _ = phase.run([3e-3], [0.0], seeds=[1])
    for (step, inside), (_, single) in zip(records, alone_records):
        np.testing.assert_array_equal(np.asarray(inside["pt_loss"])[1:], np.asarray(single["pt_loss"]))
    for a, b in zip(leaves(state.params, slice(1, None)), leaves(alone.params, slice(None))):
        np.testing.assert_array_equal(a, b)
    # The stopped member's parameters are those it had at its stop step.
    phase.section.update(steps=int(first), target=0.0)
    at_stop, _, _ = phase.run([3e-3], [0.0])
    for a, b in zip(leaves(state.params, slice(0, 1)), leaves(at_stop.params, slice(None))):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_host_side_stop_rule_stops_members_as_the_criterion_in_the_program_does():
    """PhaseLoop's `stop(metrics)` (a study's rule over what it measures, e.g. a feature's rate in sampled text)
    stops a member at the first evaluation where it holds: the same steps, records and states as the jitted
    criterion it mirrors here (held-out C_PT >= 0.55 for member 0 only)."""
    import jax.numpy as jnp
    phase = CriterionPhase(120, 32, 128, target=0.55, member_batch=1)
    in_program = phase.run([3e-3, 3e-3], [1.0, 0.0])
    phase.section.update(target=0.0)
    on_host = phase.run([3e-3, 3e-3], [0.0, 0.0], stop=lambda m: (m["pt_acc"] >= 0.55) & jnp.array([True, False]))
    assert int(on_host[0].stop_step[0]) > 0 and int(on_host[0].stop_step[1]) == -1
    assert_same(in_program, on_host)
    # without the rule nothing stops
    free = phase.run([3e-3, 3e-3], [0.0, 0.0])
    assert not np.asarray(free[0].stopped).any()


def test_the_time_host_side_measurements_take_is_counted_apart():
    """PhaseLoop times its `measure` calls (step 0's included) and reports the running total with each chunk: the
    share of a phase's time that sampling takes in a language-model study."""
    import time
    phase = CriterionPhase(40, 8, 64)

    def measure(state, step, final, records):
        time.sleep(0.25)
        return {"extra": np.full(state.step.shape, float(step))}

    reported = []
    _, records, _ = phase.run([3e-3], [0.0], measure=measure,
                              on_chunk=lambda *a, measuring, **k: reported.append(measuring))
    assert [float(np.asarray(m["extra"])[0]) for _, m in records] == [0.0, 20.0, 40.0]
    assert len(reported) == 2 and 0.5 <= reported[0] < reported[1]
    assert 0.75 <= reported[1] < 1.5  # three measurements of 0.25 s, and no training time


@pytest.mark.slow
def test_stopped_members_leave_the_program_without_changing_any_number():
    """With members stopped, later chunks train the others only (compact=True); records and states equal those of
    the full program bit for bit."""
    # Members train in member batches of 4 and are evaluated in batches of 8: the compacted axis keeps both widths.
    phase = CriterionPhase(120, 16, 128, target=0.45, member_batch=4)
    lrs = [3e-3, 1e-30, 3e-3, 3e-3, 1e30, 1e-30, 3e-3, 1e-30] * 2  # some stop, two diverge, some never stop
    weights = [1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0] * 2
    full, small = (phase.run(lrs, weights, compact=compact) for compact in (False, True))
    assert set(full[2]) == {16} and min(small[2]) == 8  # members did leave the program
    assert np.asarray(small[0].stopped).sum() >= 4 and np.asarray(small[0].diverged).sum() == 2
    assert_same(full, small)
    # Once every member has stopped or diverged, the phase ends: no more chunks, and the records of the steps left
    # and the final state are still those of the full program.
    lrs = [3e-3] * 15 + [1e30]
    reported = []
    full = phase.run(lrs, [1.0] * 16, compact=False)
    small = phase.run(lrs, [1.0] * 16, on_chunk=lambda *a, **k: reported.append((a[:2], k["trained"], k["training"])))
    assert bool(np.asarray(small[0].stopped | small[0].diverged).all())
    assert len(small[2]) < len(full[2]) == 6 and 0 not in small[2]  # chunks stopped where the last member did
    assert reported[-1] == ((120, 120), 0, 0) and reported[-2][2] == 0 and len(reported) == len(small[2]) + 1
    assert_same(full, small)


def assert_same(full, small):
    """Final states and records equal bit for bit."""
    (full, full_records, _), (small, small_records, _) = full, small
    for a, b in zip(leaves(full, slice(None)), leaves(small, slice(None))):
        np.testing.assert_array_equal(a, b)
    for (step_a, a), (step_b, b) in zip(full_records, small_records):
        assert step_a == step_b and a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=f"{name} at {step_a}")


def test_running_out_of_device_memory_is_one_line_naming_the_members_and_the_key(tmp_path, capsys, monkeypatch):
    from fttrace import cli
    from fttrace.engine.train import PhaseLoop
    real = PhaseLoop.run

    def run(self, state, data, on_chunk=None, records=None, on_records=None):
        if self.phase.steps == 10:  # fine-tuning: its first chunk asks for more than the device has
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 68719476736 bytes.")
        return real(self, state, data, on_chunk, records, on_records)
    monkeypatch.setattr(PhaseLoop, "run", run)
    work = tmp_path / "w"
    assert cli.main(["run", SMOKE, "--workdir", str(work), "-q", *[f"--config.{o}" for o in TINY + [NO_EVALS]]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fttrace: error: group 0 finetune: out of device memory training 4 "
                                               "members, 4 at a time") and "finetune.member_batch" in err[0]
    assert (work / "checkpoints" / "g0-pretrain" / "20").is_dir()  # what was done is kept


def test_a_phase_whose_members_all_stop_at_once_still_measures_each_step_left():
    """Every member stops at its first evaluation (a host-side rule): the phase trains no chunk, a `measure` still
    measures at each eval step left, and records and state are those of the full program."""
    import jax.numpy as jnp
    phase = CriterionPhase(40, 8, 64)

    def measure(state, step, final, records):
        return {"extra": np.full(state.step.shape, float(step + final))}

    stop = lambda m: jnp.ones(m["pt_acc"].shape, bool)  # noqa: E731
    full, small = (phase.run([3e-3, 3e-3], [0.0, 0.0], compact=compact, stop=stop, measure=measure)
                   for compact in (False, True))
    assert small[2] == [] and full[2] == [2, 2]
    assert [float(np.asarray(m["extra"])[0]) for _, m in small[1]] == [0.0, 20.0, 41.0]
    assert_same(full, small)
