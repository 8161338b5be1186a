"""Every numeric setting an optimiser or a sampler takes is checked at load: a value none accepts is refused with one
line naming its key, by `fttrace run` before a workdir exists."""
import pytest

from helpers import ROOT, SMOKE, assert_config_error

STORIES = str(ROOT / "configs" / "stories_twist.py") + ":tiny"
CANARY = str(ROOT / "configs" / "canary_unlock.py") + ":tiny"


@pytest.mark.parametrize("config, override, key", [
    (SMOKE, "finetune.lr_scale.medium=-10.0", "finetune.lr_scale.medium"),
    (SMOKE, "finetune.lr_scale.large=1e999", "finetune.lr_scale.large"),
    (SMOKE, "sweep.pretrain_lr=(1e999,)", "sweep.pretrain_lr"),
    (SMOKE, "sweep.finetune_lr=(-1e-3,)", "sweep.finetune_lr"),
    (SMOKE, "pretrain.weight_decay=-1.0", "pretrain.weight_decay"),
    (SMOKE, "finetune.b1=2.0", "finetune.b1"),
    (SMOKE, "pretrain.b2=1.0", "pretrain.b2"),
    (SMOKE, "finetune.grad_clip=-1.0", "finetune.grad_clip"),
    (SMOKE, "reft.lr_scale=1e999", "reft.lr_scale"),
    (SMOKE, "reft.eval_schedule='sqrt'", "reft.eval_schedule"),
    (SMOKE, "sweep.finetune_optimizer.b1=(0.9,1.5)", "sweep.finetune_optimizer.b1"),
    (SMOKE, "sweep.pretrain_optimizer.eps=(0.0,)", "sweep.pretrain_optimizer.eps"),
    (STORIES, "generate.temperature=1e999", "generate.temperature"),
    (STORIES, "pretrain.weight_decay=-1.0", "pretrain.weight_decay"),
    (STORIES, "pretrain.b1=2.0", "pretrain.b1"),
    (STORIES, "sweep.finetune_lr=(1e999,)", "sweep.finetune_lr"),
    (CANARY, "pretrain.lr=1e999", "pretrain.lr"),
    (CANARY, "sweep.unlock_lr=(-1e-3,)", "sweep.unlock_lr"),
])
def test_out_of_range_numbers_are_refused_naming_the_key(config, override, key, tmp_path, capsys):
    if config != SMOKE:
        pytest.importorskip("sentencepiece")
    assert_config_error(config, override, key, tmp_path / "w", capsys)


def test_revival_is_timed_to_the_step_early_in_reft():
    """reFT evaluates at 1, 2, 3, 5, 7, ... steps below its evaluation interval, then evenly: a member that revives
    within a few steps is not floored at the first interval."""
    from fttrace.config import load
    from fttrace.engine.train import eval_steps, log_spaced_steps
    assert log_spaced_steps(50) == (1, 2, 3, 5, 7, 10, 15, 20, 30)
    assert log_spaced_steps(1) == ()
    reft = load("default").reft
    steps = eval_steps(reft)
    assert steps[:6] == (0, 1, 2, 3, 5, 7) and steps[-1] == reft.steps
    assert list(steps) == sorted(set(steps)) and set(range(0, reft.steps + 1, reft.eval_every)) <= set(steps)
    even = reft.copy_and_resolve_references()
    even.eval_schedule = "even"
    assert eval_steps(even) == tuple(range(0, reft.steps + 1, reft.eval_every))
