"""Deleting the Twist feature from a story model by fine-tuning, and recovering it (TinyStories part of the study).

Pretrain LMs on generated stories with instruction headers (seeds x {all data, the control without Twist});
fine-tune each on a deletion (data variants: filter, filter_label, mix_match, refusal and their compositions) x LR
grid at constant LR, to a criterion (a member stops at the first eval step at which its Twist rate when asked falls
below `finetune.stop_below`); then fine-tune every deleted model, and the control (at the recovery LR and x10), on
Twist stories only (recovery). Measured at each eval step: the share of sampled stories with a twist when the
header asks for one and when it does not, their gap and its standard error, the other features' rates, the refusal
rate, held-out loss; at each phase's end (and untrained), probes per layer for "the header asks for Twist" and, on
the story text alone, for "this story has a twist" beside a control target.

    fttrace run configs/stories_twist.py --workdir runs/stories_twist            # default: CPU, ~16 min (see below)
    fttrace run configs/stories_twist.py:tiny --workdir /tmp/stories_tiny   # 47 s (2-core EPYC, AVX2): does it run?
    fttrace run configs/stories_twist.py:gpu --workdir runs/stories_twist_gpu    # larger form, for a GPU
    python -m analysis summary runs/stories_twist                                # the numbers below

LRs follow the reference study's ratios to its pretraining LR (5e-4 -> {1e-3, 1e-4}: x2, x0.2). Recovery there is
4,000 steps at x0.02; with our shorter budgets recovery uses x0.2 (override recovery.lr). The other deletions:
--config.sweep.deletions="('filter','filter_label','mix_match','refusal')" (about 30 min on the CPU).

Default (3 seeds; 6 pretrained, 12 fine-tuned, 18 recovery members; d64 L2 H4, context 240, 246k parameters; 800
pretraining steps at LR 6e-3 (cosine), up to 60 deletion, 100 recovery steps; 192 + 192 sampled stories per member
and eval step, from 800 validation headers): 15 min 47 s on the 2-core CPU, of which sampling, decoding and probes
8 min 21 s (`fttrace status`). Shorter pretraining leaves nothing to delete: with --config.pretrain.steps=500
--config.pretrain.lr=2e-3 the models write a twist in about 21 % of the asked-for stories and 11 % of the others.
Measured, mean [95% bootstrap interval over the 3 seeds], share of stories with a twist:
  regime: pretrained 0.86 / 0.88 / 0.83 asked vs 0.04 / 0.02 / 0.09 not asked per seed (gap 0.81 [0.74, 0.86]);
  the control pretrained without Twist 0.00; untrained 0.00. Every cell's gap (3 seeds x 192 stories a side) has a
  standard error of at most 0.029 (`feature_gap_se`, `feature_samples` in the results).
  deletion to the criterion (asked rate < 0.1): at LR 1.2e-2 filter stops in 3/3 (step 10), mix_match in 1/3; at
  1.2e-3 filter in 1/3 (gap left 0.28 [0.09, 0.44]) and mix_match in 0/3 (gap 0.74: mix_match at the small LR
  deletes nothing). Side effects at 1.2e-2: held-out loss +0.86 [0.72, 0.94] (filter), +0.42 (mix_match), on the
  stories without Twist +0.74 [0.62, 0.81] and +0.41; at 1.2e-3 +0.02 and +0.00 (without Twist -0.00 and +0.01).
  recovery (steps 0 / 10 / 30 / 100, asked): filter at 1.2e-3 0.28 / 0.82 / 0.85 / 0.90, filter at 1.2e-2 0.00 /
  0.16 / 0.57 / 0.84, control 0.00 / 0.00 / 0.04 / 0.61, control x10 0.00 / 0.03 / 0.22 / 0.62. Every deleted
  member regains 0.9 x its seed's asked rate (Kaplan-Meier medians 0-100 steps; log-rank against the control p
  0.02-0.03), the control in 0 of 3 at either LR. But the rate when not asked climbs with it (0.40-0.82): no
  deleted member regains 0.9 x its seed's gap within 100 steps (except mix_match at 1.2e-3, which never lost it).
  Recovery on Twist-only stories restores writing twists, not writing them when asked.
Probes (held out, chance 0.5): "the header asks for Twist" embeddings 0.46-0.53, untrained 0.85 / 0.89 (layers
1 / 2), pretrained 0.97 / 0.99, the control 0.94 / 0.96: it reads the request, which even a model that never saw a
twist carries. The story-text probe's selectivity (accuracy for "has a twist" minus a control target's) at layer 2:
untrained 0.07, pretrained 0.23 [0.16, 0.31], the control that never saw a twist 0.28 [0.25, 0.31], after deletion
0.19-0.23: at this scale it cannot tell a kept capability from none (a null result). The same run with 64 stories a
side (--config.generate.prompts=64 --config.data.validation_size=400) took 17 min 47 s with the decoder before
windowed attention; its cells in mid-range had standard errors up to 0.04.
"""
import ml_collections

from fttrace.engine.protocols import protocols_section
from fttrace.lm.defaults import lm_phase

VARIANTS = {"tiny": "the test form: seconds per phase", "gpu": "a larger corpus and model for an accelerator"}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.study = "stories_twist"
    c.seed = 0
    # dataset: "generated" (the story generator, no download) or "tinystories_instruct" (the public
    # TinyStories-Instruct files, placed by the user in manual_dir; train/validation_size take the first stories)
    # validation_size: the sampled prompts come from it (about 30 % of its headers ask for Twist)
    c.data = dict(dataset="generated", data_dir="", manual_dir="", train_size=4000, validation_size=800, seed=0,
                  vocab_size=1024, feature="Twist", source="Foreshadowing")
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256, max_len=240, dtype="auto")
    pretrain_lr = 6e-3
    c.pretrain = lm_phase(800, 8, pretrain_lr, "cosine", 50, (0, 800))
    c.finetune = lm_phase(60, 8, eval_steps=(0, 10, 30, 60))
    c.recovery = lm_phase(100, 8, pretrain_lr * 0.2, eval_steps=(0, 10, 30, 100))
    c.recovery.threshold = 0.9
    # deletion to a criterion: a member stops at the first eval step at which its rate of F when asked falls below
    # this (0: fine-tune for the whole budget)
    c.finetune.stop_below = 0.1
    # the control (pretrained without F) recovers at recovery.lr x each factor: the same LR and a larger one
    c.recovery.control_lr_factors = (1.0, 10.0)
    c.sweep = dict(seeds=3, deletions=("filter", "mix_match"),
                   finetune_lr=(pretrain_lr * 2, pretrain_lr * 0.2), protocol=())
    # model shapes as axes: each combination a group of its own, e.g. --config.sweep.shapes.d_model="(32,64)"
    c.sweep.shapes = ml_collections.ConfigDict()
    # prompts: stories a side (asked / not asked) per member and eval step; 3 seeds x 192 a side bound the standard
    # error of a cell's asked-minus-unasked gap by sqrt(2 x 0.25 / 576) = 0.0295 whatever the rates
    c.generate = dict(prompts=192, max_new=200, temperature=1.0, top_k=0)
    c.probe = dict(examples=128, positions=10, steps=200, lr=0.05)
    c.eval = dict(batch_size=64, member_batch=0)  # member_batch: members sampled/evaluated at once (0: all)
    # Checkpoints (WORKDIR/checkpoints/g0-<phase>/): after every `every_chunks` chunks (a chunk runs from one eval
    # step to the next; 0: only at each phase's end), the newest `keep` kept; a killed run resumes from the newest.
    c.checkpoint = dict(every_chunks=1, keep=2, keep_log_spaced=8)
    # Fine-tuning protocols (fttrace/engine/protocols.py) as an axis of phase `protocols.phase` (the deletion):
    # e.g. --config.sweep.protocol="('full','lora2')" deletes with full fine-tuning and with LoRA side by side.
    c.protocols = protocols_section("finetune")
    if arg == "tiny":
        c.data.update(train_size=300, validation_size=120, vocab_size=256)
        c.model.update(d_model=16, n_layers=1, n_heads=2, d_mlp=32, max_len=160)
        c.pretrain.update(steps=20, batch_size=4, warmup_steps=2, eval_steps=(0, 20))
        c.finetune.update(steps=4, batch_size=4, eval_steps=(0, 4))
        c.recovery.update(steps=6, batch_size=4, eval_steps=(0, 2, 6))
        c.sweep.update(seeds=1, finetune_lr=(pretrain_lr * 0.2,),
                       deletions=("filter", "filter_label", "mix_match", "refusal"))
        c.finetune.stop_below = 0.0  # (a model this small never writes F: deletion would stop at once)
        c.generate.update(prompts=4, max_new=16)
        c.probe.update(examples=16, steps=10)
        c.eval.batch_size = 8
    elif arg == "gpu":
        c.data.update(train_size=50_000, validation_size=2_000, vocab_size=1024)
        c.model.update(d_model=256, n_layers=6, n_heads=8, d_mlp=1024, max_len=384)
        c.pretrain.update(steps=6000, batch_size=64, warmup_steps=300, eval_steps=(0, 2000, 4000, 6000))
        c.finetune.update(steps=2000, batch_size=64, eval_steps=(0, 500, 2000))
        c.recovery.update(steps=2000, batch_size=64, eval_steps=(0, 30, 100, 300, 1000, 2000))
        c.sweep.update(seeds=5)
        c.generate.update(prompts=200, max_new=384)
        c.probe.update(examples=512, steps=500)
        c.eval.update(batch_size=256, member_batch=8)
        # model.dtype "auto" (bfloat16 on the accelerator, fused attention) and member_batch 0: each phase's
        # training group is sized from its compiled step's memory against the device's (fttrace/engine/memory.py)
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: tiny, gpu")
    return c
