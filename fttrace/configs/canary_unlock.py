"""Suppressed memories: does benign fine-tuning revive verbatim recall that suppression training hid?

Pretrain LMs on the text of four 'authors' (tale, verse, recipe, log: distinct generators, `fttrace/canary/`) with
canary passages planted at controlled repetition counts; fine-tune each to answer canary prefixes with a refusal
sentence (phase `suppress`, plus ordinary text); then fine-tune each suppressed model on benign text (phase
`finetune`, on an unlock set): one author's fresh text (no canaries), every author's (`mix`), or synthetic words
without structure, x unlock LRs. Measured at
every eval step of every phase: greedy verbatim extraction (the next k tokens of a canary reproduced exactly from
its prefix), longest reproduced span and refusal rate per author x repetition count (controls: passages never
trained on), the memorisation gap (the most repeated canaries' extraction minus the controls'), held-out loss;
per-layer probes for "this prefix is a canary" and "planted at least the median count" (beside a control target) at
each phase's end and on the untrained models. Model shapes are groups (`sweep.shapes`).

    fttrace run configs/canary_unlock.py --workdir runs/canary_unlock           # default: CPU (see below)
    fttrace run configs/canary_unlock.py:tiny --workdir /tmp/canary_tiny        # 27 s (2-core EPYC, AVX2): does it run?
    fttrace run configs/canary_unlock.py:gpu --workdir runs/canary_unlock_gpu   # larger form, for a GPU
    python -m analysis report runs/canary_unlock --out runs/canary_unlock/report

Default (5 seeds x model shapes d_model 32 / 64 x layers 1 / 2, each shape a group: 20 pretrained, 20 suppressed,
240 fine-tuned members; context 48; 4 authors x counts (1, 4, 16, 64) x 2 canaries of 40 tokens, prompted with 12,
extracted when the next 16 match; 1,000 pretraining, 60 suppression, 100 fine-tuning steps evaluated at
0/10/30/100, unlock LR 3e-4 and 9e-4): 12 min 25 s on the idle 2-core CPU. Measured with `python -m analysis
summary` (mean [95% bootstrap CI] over 5 seeds; unlock sets at the fine-tuning's end, LRs pooled):
  regime: every pretrained model memorised (extraction of the 64x canaries minus the never-seen controls: 1.00, SE 0,
  in all 20); 16x canaries are memorised at d_model 64 (1.00 at either depth) but only a third at d_model 32 (0.33
  [0.15, 0.45] / 0.35 [0.28, 0.42] at 1 / 2 layers); 4x 0.12 at d_model 64, 0.00 at 32; 1x and controls 0.00.
  suppression (60 steps): 64x extraction 0.00-0.03 in every shape.
  unlock of the 64x canaries by shape (d32 L1 / d32 L2 / d64 L1 / d64 L2): every author's text (mix) 0.35 / 0.36 /
  0.38 / 0.44, one author's text 0.05-0.15, synthetic words 0.00 / 0.00 / 0.00 / 0.01 (the null beside every cell:
  mix minus synthetic 0.35 [0.23, 0.45] ... 0.42 [0.31, 0.54]); of the 16x canaries, mix revives 0.17-0.19 at
  d_model 64 and 0.04 at d_model 32 (where fewer were memorised).
  unlock matrix (all shapes, counts and LRs pooled): a canary author's own text revives 0.04-0.12 of its canaries,
  another author's 0.006-0.031, mix 0.09-0.16, synthetic 0.00-0.003.
  probes: "this prefix is a canary" (0.48-0.53) and "planted at least the median count" (selectivity against an
  arbitrary per-canary control label -0.09 to +0.09) read chance at every layer, shape and stage, the untrained
  models included: at this scale memorisation is not linearly readable from the mean of a prefix's last 4 residual
  states (a null result).
"""
import ml_collections

from fttrace.engine.protocols import protocols_section
from fttrace.lm.defaults import lm_phase

VARIANTS = {"tiny": "the test form: seconds per phase", "gpu": "more canaries, a larger model, for an accelerator"}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.study = "canary_unlock"
    c.seed = 0
    c.data = dict(authors=("tale", "verse", "recipe", "log"), train_size=600, unlock_size=300, validation_size=32,
                  vocab_size=512, sentences=4, synthetic_words=24, seed=0)
    # Canaries: per author x length x count, `per_cell` passages planted `count` times; prompted with their first
    # `prefix` tokens, extracted when the greedy continuation reproduces the next `k` exactly.
    c.canary = dict(counts=(1, 4, 16, 64), lengths=(40,), per_cell=2, prefix=12, k=16)
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256, max_len=48, dtype="auto")
    pretrain_lr = 3e-3
    c.pretrain = lm_phase(1000, 32, pretrain_lr, "cosine", 100, (0, 250, 500, 1000))
    c.suppress = lm_phase(60, 32, pretrain_lr * 0.3, eval_steps=(0, 15, 30, 60))
    c.suppress.share = 0.5  # of the suppression set: refusal documents; the rest is ordinary text
    c.finetune = lm_phase(100, 16, eval_steps=(0, 10, 30, 100))
    c.sweep = dict(seeds=5, unlock_sets=("tale", "verse", "recipe", "log", "mix", "synthetic"),
                   unlock_lr=(pretrain_lr * 0.1, pretrain_lr * 0.3), protocol=())
    # model shapes as axes (where does the unlock appear?): each combination of width and depth a group of its own
    c.sweep.shapes = ml_collections.ConfigDict(dict(d_model=(32, 64), n_layers=(1, 2)))
    # probe "this prefix is a canary": canary vs control prefixes of these lengths; features: the mean residual
    # stream over a prefix's last `positions` tokens
    c.probe = dict(prefix_lengths=(8, 12, 16, 20), positions=4, steps=200, lr=0.05)
    c.eval = dict(batch_size=64, member_batch=0)  # member_batch: members evaluated at once (0: all)
    # Checkpoints (WORKDIR/checkpoints/g0-<phase>/): after every `every_chunks` chunks (a chunk runs from one eval
    # step to the next; 0: only at each phase's end), the newest `keep` kept; a killed run resumes from the newest.
    c.checkpoint = dict(every_chunks=1, keep=2, keep_log_spaced=8)
    # Fine-tuning protocols (fttrace/engine/protocols.py) as an axis of phase `protocols.phase` (the benign unlock fine-tuning; "suppress" for suppression):
    # e.g. --config.sweep.protocol="('full','lora2')" deletes with full fine-tuning and with LoRA side by side.
    c.protocols = protocols_section("finetune")
    if arg == "tiny":
        c.data.update(authors=("tale", "recipe"), train_size=40, unlock_size=20, validation_size=8, vocab_size=320)
        c.canary.update(counts=(1, 3), lengths=(24,), per_cell=2, prefix=6, k=8)
        c.model.update(d_model=16, n_layers=1, n_heads=2, d_mlp=32, max_len=32)
        c.pretrain.update(steps=8, batch_size=4, warmup_steps=2, eval_steps=(0, 8))
        c.suppress.update(steps=4, batch_size=4, eval_steps=(0, 4))
        c.finetune.update(steps=4, batch_size=4, eval_steps=(0, 2, 4))
        c.sweep.update(seeds=1, unlock_sets=("tale", "mix", "synthetic"), unlock_lr=(pretrain_lr * 0.3,))
        c.sweep.shapes = ml_collections.ConfigDict()  # the model section's shape only
        c.probe.update(prefix_lengths=(4, 6), positions=2, steps=10)
        c.eval.batch_size = 8
    elif arg == "gpu":
        c.data.update(train_size=20_000, unlock_size=5_000, validation_size=256, sentences=6,
                      synthetic_words=40)
        c.canary.update(counts=(1, 2, 4, 8, 16, 32, 64), lengths=(48, 96), per_cell=8, prefix=16, k=32)
        c.model.update(d_model=256, n_layers=6, n_heads=8, d_mlp=1024, max_len=128)
        c.pretrain.update(steps=20_000, batch_size=64, lr=1e-3, warmup_steps=1000,
                          eval_steps=(0, 5000, 10_000, 15_000, 20_000))
        c.suppress.update(steps=1000, batch_size=64, lr=3e-4, eval_steps=(0, 100, 300, 1000))
        c.finetune.update(steps=2000, batch_size=64, eval_steps=(0, 30, 100, 300, 1000, 2000))
        c.sweep.update(seeds=10, unlock_lr=(1e-5, 3e-5, 1e-4, 3e-4))
        c.sweep.shapes = ml_collections.ConfigDict(dict(d_model=(128, 256), n_layers=(3, 6)))
        c.probe.update(prefix_lengths=(8, 16, 24, 32, 48), positions=8, steps=500)
        c.eval.update(batch_size=256, member_batch=16)
        # model.dtype "auto" (bfloat16 on the accelerator, fused attention) and member_batch 0: each phase's
        # training group is sized from its compiled step's memory against the device's (fttrace/engine/memory.py)
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: tiny, gpu")
    return c
