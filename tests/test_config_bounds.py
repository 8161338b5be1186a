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
