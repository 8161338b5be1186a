"""Smoke test: the whole PCFG counter study at toy scale (8 pretraining and 16 fine-tuning members), with
every evaluation (reFT and its control, pruning, probes, attention).

    fttrace run configs/smoke.py --workdir /tmp/smoke

Checks that everything runs, not what it finds. On the 2-core CPU with the compilation cache off
(`time FTTRACE_COMPILATION_CACHE=off fttrace run configs/smoke.py --workdir /tmp/smoke`): 5 min 44 s, on a day it ran
the small benchmark of README's first paragraph at half its usual speed.
"""
from fttrace.answer.defaults import pcfg_config


def get_config():
    c = pcfg_config()
    c.task.other_operands = (3,)
    c.model.update(d_model=32, n_layers=2, n_heads=2, d_mlp=64)
    c.pretrain.update(steps=200, batch_size=16, eval_every=100, warmup_steps=20)
    c.finetune.update(steps=100, batch_size=16, eval_every=50, target=0.9)
    c.sweep.update(seeds=4, prior=("high", "low"), finetune_lr=("medium",), spurious=(0.0, 1.0))
    c.eval.examples = 256
    c.reft.update(steps=100, eval_every=25, batch_size=16)
    c.probe.update(steps=100, train_examples=256, test_examples=128)
    c.prune.update(examples=128, mask_steps=20, mask_examples=64, neuron_ks=(0, 1, 2, 4, 8), head_ks=(0, 1, 2))
    c.attention.examples = 64
    c.patch.examples = 64
    return c
