"""Fine-tuning protocols compared: which leave C_PT intact, and which leave only a strippable wrapper?

The counter study of `pcfg_counter.py` (same model, grammar and pretraining), with the fine-tuning protocol as a
swept option (fttrace/engine/protocols.py): full fine-tuning, L2-SP toward the pretrained weights at two strengths,
training only the top block (and the output head), LoRA of rank 2 on every block matrix, and singular-value
fine-tuning (SVF). Every protocol fine-tunes the same pretrained members (the low prior, so that C_FT has to be
learnt) without the shortcut (C_Tr = 0), to the criterion of `pcfg_counter.py` within 3,000 steps, at two LRs:
"large" (pretraining LR / 10) and "xlarge" (the pretraining LR); all protocols x LRs x seeds (6 x 2 x 5 = 60
members) train together in one vmapped program. Then reFT at one shared LR and its control, pruning, probes and the
per-layer weight change of every member.

    fttrace run configs/protocols.py --workdir runs/protocols
    python -m analysis summary runs/protocols
    python -m analysis report runs/protocols --out runs/protocols/report

The summary prints the regime first, then per protocol and LR (analysis/protocols.py): C_FT reached, C_PT
retained, pruning's C_PT gain against random-k pruning, the probe's C_PT accuracy, reFT steps against the control
and the relative weight change per part and layer.

`configs/protocols.py:tiny` is a short version for the tests: 113 s on the 2-core AMD EPYC, AVX2 only, an empty
compilation cache (`time fttrace run protocols:tiny`).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402

from fttrace.engine.protocols import protocols_section  # noqa: E402

DEFAULT = ("full", "l2sp_1e_1", "l2sp_1", "top1", "lora2", "svf")

VARIANTS = {"tiny": "the test form: d16, 2 seeds, 10 fine-tuning steps"}


def get_config(arg=None):
    c = pcfg_counter.get_config()  # its model, grammar, pretraining and schedules
    # Two LRs: "large" (pretraining LR / 10) and "xlarge" (the pretraining LR), because the restricted protocols
    # need a larger LR to learn C_FT as far as full fine-tuning does.
    c.finetune.lr_scale.xlarge = 1.0
    # The low prior: pretraining gave no C_FT, so every protocol has to learn it (at the high prior fine-tuning meets
    # its criterion at step 0 and there is nothing to compare). 3,000 steps: a protocol that cannot reach the
    # criterion by then shows it in "C_FT reached".
    c.sweep.update(seeds=5, prior=("low",), finetune_lr=("large", "xlarge"), spurious=(0.0,))
    c.finetune.steps = 3000
    c.sweep.protocol = DEFAULT
    c.protocols = protocols_section()
    c.evals = ("reft", "prune", "probe", "weights")
    c.eval.examples = 512
    c.prune.update(examples=256, mask_steps=50)
    c.probe.update(train_examples=512, steps=150)
    c.weights = dict()
    if arg == "tiny":
        c.model.update(d_model=16, n_heads=2, d_mlp=32, n_layers=2)
        c.pretrain.update(steps=20, eval_every=10, batch_size=8, warmup_steps=2)
        c.finetune.update(steps=10, eval_every=10, batch_size=8)
        c.reft.update(steps=20, eval_every=10, batch_size=8)
        c.sweep.seeds = 2
        c.sweep.finetune_lr = ("large",)
        c.sweep.protocol = ("full", "l2sp_1", "top1", "lora2", "svf")
        c.eval.examples = 64
        c.probe.update(steps=30, train_examples=128, test_examples=64)
        c.prune.update(examples=64, mask_steps=5, mask_examples=32, neuron_ks=(0, 1, 2), head_ks=(0, 1))
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: tiny")
    return c
