"""Fine-tuning protocols compared: which leave C_PT intact, and which leave only a strippable wrapper?

The counter study of `pcfg_counter.py` (same model, grammar and pretraining), with the fine-tuning protocol as a
swept option (fttrace/protocols.py): full fine-tuning, L2-SP toward the pretrained weights at two strengths,
training only the top block (and the output head), LoRA of rank 2 on every block matrix, and singular-value
fine-tuning (SVF). Every protocol fine-tunes the same pretrained members (one prior, "high") without the shortcut
(C_Tr = 0) at two LRs: "large" (pretraining LR / 10, where full fine-tuning forgets C_PT) and "xlarge" (the
pretraining LR); all protocols x LRs x seeds (6 x 2 x 5 = 60 members) train together in one vmapped program. Then
reFT, pruning, probes and the per-layer weight change of every member.

    fttrace run configs/protocols.py --workdir runs/protocols
    python -m analysis report runs/protocols --out runs/protocols/report

Measured on the 2-core CPU (shared with other jobs): 8 min 22 s wall (the manifest's wall_s 499), 5 pretrained,
60 fine-tuned and 60 reverse-fine-tuned members plus the reFT control. Headline, mean over 5 seeds [95% bootstrap
CI]; every pretrained member has C_PT 0.986 and C_FT 0.62 on average; reFT x = speed-up over the control that never
had C_PT:
  LR large:  full      C_FT 0.94 [0.92, 0.96]  C_PT 0.45 [0.32, 0.58]   reFT 290 [270, 300] steps  x1.02
             l2sp_1    C_FT 0.91 [0.86, 0.95]  C_PT 0.58 [0.42, 0.74]   reFT 165 [90, 255]         x2.1
             lora2     C_FT 0.76 [0.61, 0.86]  C_PT 0.89 [0.81, 0.96]
             top1      C_FT 0.73 [0.56, 0.84]  C_PT 0.92 [0.87, 0.96]
             svf       C_FT 0.65 [0.48, 0.79]  C_PT 0.985 [0.984, 0.986]
  LR xlarge: full      C_FT 0.99 [0.98, 1.00]  C_PT 0.28 [0.26, 0.29]   reFT 255 [205, 300]  x0.52  probe 0.68
             lora2     C_FT 0.93 [0.89, 0.96]  C_PT 0.33 [0.29, 0.37]   reFT 80 [55, 105]    x1.72  probe 0.93
             svf       C_FT 0.77 [0.61, 0.88]  C_PT 0.77 [0.68, 0.85]
SVF keeps C_PT best, but it is also the protocol that learns C_FT least; where C_PT was lost at a similar C_FT, it
comes back fastest after LoRA (reFT ~3x faster than after full fine-tuning at the same LR and faster than the
control, and probes still read it), while after full fine-tuning at that LR reFT is slower than the control.

`configs/protocols.py:tiny` is a seconds-long version for the tests.
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import pcfg_counter  # noqa: E402

PROTOCOLS = dict(
    full=dict(kind="full"),
    l2sp_1e_1=dict(kind="l2sp", strength=1e-1),
    l2sp_1=dict(kind="l2sp", strength=1.0),
    top1=dict(kind="top_k", top_k=1),
    lora2=dict(kind="lora", rank=2),
    svf=dict(kind="svf"),
    # Defined for overrides (--config.sweep.protocol=...): in a pilot at the large LR, l2sp_1e_2 matched full
    # fine-tuning and lora4 matched lora2 within their intervals.
    l2sp_1e_2=dict(kind="l2sp", strength=1e-2),
    lora4=dict(kind="lora", rank=4),
)
DEFAULT = ("full", "l2sp_1e_1", "l2sp_1", "top1", "lora2", "svf")


def get_config(arg=None):
    c = pcfg_counter.get_config()  # its model, grammar, pretraining and schedules
    # Two LRs: "large" (pretraining LR / 10) and "xlarge" (the pretraining LR), because the restricted protocols
    # need a larger LR to learn C_FT as far as full fine-tuning does.
    c.finetune.lr_scale.xlarge = 1.0
    c.sweep.update(seeds=5, prior=("high",), finetune_lr=("large", "xlarge"), spurious=(0.0,))
    c.sweep.protocol = DEFAULT
    c.protocols = dict(
        named=PROTOCOLS,
        # The block matrices LoRA and SVF adapt (in every block); everything else stays frozen for them.
        targets=("attn.query", "attn.key", "attn.value", "attn.out", "mlp.fc_in", "mlp.fc_out"),
        lora_alpha=8.0,  # LoRA's update is (lora_alpha / rank) A B
    )
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
