"""Deleting the Twist feature from a story model by fine-tuning, and recovering it (TinyStories part of the study).

Pretrain LMs on generated stories with instruction headers (seeds x {all data, the control without Twist});
fine-tune each on a deletion (filter, filter_label, mix_match, refusal: data variants) x LR grid at constant LR; then
fine-tune every deleted model, and the control, on Twist stories only (recovery). Measured at each eval step: the
share of sampled stories with a twist when the header asks for one, the same share when it does not, the refusal
rate, held-out loss; at each phase's end, linear probes per layer for "the header asks for Twist".

    fttrace run configs/stories_twist.py --workdir runs/stories_twist            # default: CPU, ~19 min (see below)
    fttrace run configs/stories_twist.py:tiny --workdir /tmp/stories_tiny        # seconds: does it run?
    fttrace run configs/stories_twist.py:gpu --workdir runs/stories_twist_gpu    # larger form, for a GPU

LRs follow the reference study's ratios to its pretraining LR (5e-4 -> {1e-3, 1e-4, 1e-5}: x2, x0.2, x0.02).
Recovery there is 4,000 steps at x0.02; with our shorter budgets recovery uses x0.2 (override recovery.lr).

Default (3 seeds; 6 pretrained, 36 fine-tuned, 39 recovery members; d64 L2 H4, context 240, 246k parameters; 500
pretraining, 60 fine-tuning, 100 recovery steps; 24 + 24 sampled stories per member and eval step): 18 min 51 s on
the idle 2-core CPU (1,590 CPU-s; 30 min under a load of ~5; sampling is most of it, fewer `generate.prompts`
shorten it). Measured,
mean [95% bootstrap interval over the 3 seeds], share of stories with a twist when the header asks for one
(training data: 100 %):
  pretrained 21 % [12, 29] (asked) vs 11 % [8, 12] (not asked); the control pretrained without Twist 0 %;
  after deletion (LR 4e-5 / 4e-4 / 4e-3): filter 10 / 4 / 0 %, filter_label 19 / 0 / 0 %, mix_match 12 / 22 / 19 %,
  refusal 10 / 4 / 0 %;
  recovery steps 0 / 10 / 30 / 100: filter at 4e-4 3 / 14 / 31 / 47 %, filter at 4e-3 0 / 0 / 0 / 24 %,
  control 0 / 0 / 0 / 3 %; every one of the 36 deleted members regains 0.9 x its seed's pretrained rate within
  100 steps (0-100 steps, later after the larger deletion LR), the control in none of 3.
Probes for "the header asks for Twist" (headers without summary): embeddings 0.42-0.54 (chance), untrained models
0.85 / 0.89 (layers 1 / 2), pretrained 0.99-1.00 and the control 0.99-1.00; after deletion 0.93-1.00 except
filter_label at 4e-3 (0.83 / 0.84, near the untrained models). The probe reads the request carried from the
Features line, which even a model that never saw a twist story carries.
"""
import ml_collections

from fttrace.defaults import lm_phase, protocols_section

VARIANTS = {"tiny": "the test form: seconds per phase", "gpu": "a larger corpus and model for an accelerator"}


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.study = "stories_twist"
    c.seed = 0
    # dataset: "generated" (the story generator, no download) or "tinystories_instruct" (the public
    # TinyStories-Instruct files, placed by the user in manual_dir; train/validation_size take the first stories)
    c.data = dict(dataset="generated", data_dir="", manual_dir="", train_size=4000, validation_size=400, seed=0,
                  vocab_size=1024, feature="Twist", source="Foreshadowing")
    c.model = dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256, max_len=240, dtype="float32")
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
    c.generate = dict(prompts=64, max_new=200, temperature=1.0, top_k=0)
    c.probe = dict(examples=128, positions=10, steps=200, lr=0.05)
    c.eval = dict(batch_size=64, member_batch=0)  # member_batch: members sampled/evaluated at once (0: all)
    # Checkpoints (WORKDIR/checkpoints/g0-<phase>/): after every `every_chunks` chunks (a chunk runs from one eval
    # step to the next; 0: only at each phase's end), the newest `keep` kept; a killed run resumes from the newest.
    c.checkpoint = dict(every_chunks=1, keep=2)
    # Fine-tuning protocols (fttrace/protocols.py) as an axis of phase `protocols.phase` (the deletion):
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
        for phase in (c.pretrain, c.finetune, c.recovery):
            # a training step at these shapes needs ~9.8 GB per member (XLA:CPU's memory analysis; f32 attention
            # scores of 8 heads x 384^2 per layer dominate): 4 members at once stay within an 80 GB GPU
            phase.member_batch = 4
    elif arg is not None:
        raise ValueError(f"unknown variant {arg!r}; known: tiny, gpu")
    return c
