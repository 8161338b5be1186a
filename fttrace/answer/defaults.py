"""The default PCFG study config that every `configs/pcfg_*.py` and `configs/smoke.py` starts from, and the Tracr
study's.

None of these numbers is published by the reference study; each is a documented, overridable choice.
"""
from __future__ import annotations

import ml_collections


def pcfg_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0  # base of every member's PRNG key (each member adds its own `seed`)

    c.task = dict(
        name="counter",  # counter | index
        grammar="default",  # "default" (fttrace.answer.tasks.pcfg.DEFAULT_RULES) or a rules table of the same form
        n_terminals=10,
        data_len=27,  # data slots per sequence; the default grammar's strings are 1-27 terminals long
        pt_operand=0,  # O_PT: terminal t0 (about 12% of terminals)
        ft_operand=2,  # O_FT: terminal t2 (about 12% of terminals)
        other_operands=(),  # further terminals that pretraining asks about, evenly with O_PT
        control_operand=-1,  # the probes' control terminal, never asked about (-1: the one as frequent as O_PT)
        holdout=0.1,  # share of the grammar's strings kept out of every training stream (the evaluation strings)
        candidates=24,  # strings drawn per training sequence to find one that fits (split, shortcut)
        # Sampling priors of O_FT during pretraining, by name (sweep.prior may also hold plain numbers).
        priors=dict(high=0.2, medium=0.02, low=0.002),
    )
    c.model = dict(
        d_model=64, n_layers=2, n_heads=4, head_dim=0, d_mlp=256, layer_norm=True, causal=True,
        activation="gelu", use_bias=True, dtype="auto",
        vocab_size=0,  # 0: the task's vocabulary size
        max_len=0,  # 0: the task's sequence length
    )
    c.pretrain = dict(steps=2000, batch_size=64, eval_every=200, schedule="cosine", warmup_steps=100,
                      weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.999, member_batch=0)
    c.finetune = dict(steps=1000, batch_size=64, eval_every=100, schedule="constant", warmup_steps=0,
                      weight_decay=0.01, grad_clip=1.0, b1=0.9, b2=0.999, member_batch=0,
                      # The study's convention: fine-tuning LR = pretraining LR x scale.
                      lr_scale=dict(small=1e-3, medium=1e-2, large=1e-1),
                      # Fine-tuning to a criterion: a member stops once its held-out accuracy on its own fine-tuning
                      # distribution (C_FT with and without the shortcut, mixed as C_Tr) reaches `target` (0: off).
                      target=0.0)
    # A phase's `member_batch`: members vmapped together in one training step (0: as many as fit the device's
    # activation budget, or all of them when members are sharded over several devices).
    c.sweep = dict(
        seeds=10, seed_offset=0,
        pretrain_lr=(1e-3,),
        prior=("high", "medium", "low"),
        finetune_lr=("small", "medium", "large"),
        spurious=(0.0, 1.0),  # C_Tr: fraction of fine-tuning sequences that carry the shortcut
        finetune_priors=(),  # priors whose pretrained members are fine-tuned (empty: every prior)
        shapes=ml_collections.ConfigDict(),  # model fields swept across groups, e.g. d_model=(64, 128)
        # optimiser hyperparameters swept per member, e.g. weight_decay=(0.0, 0.1) (train.OPTIMIZER_AXES), of the
        # pretraining members (a product with pretrain_lr and prior) and of the fine-tuning members
        pretrain_optimizer=ml_collections.ConfigDict(),
        finetune_optimizer=ml_collections.ConfigDict(),
        # fine-tuning axes that vary together instead of as a product, e.g. ("finetune_lr", "spurious")
        zip=(),
    )
    # member_batch: members evaluated together (bounds evaluation memory; raise it on accelerators).
    c.eval = dict(examples=1024, seed=1234, member_batch=8)
    # Checkpoints (WORKDIR/checkpoints/): every `every_chunks` chunks of `eval_every` steps (0: only at the end of
    # each phase, where they are always written); the newest `keep` of each phase are kept, and `keep_log_spaced`
    # at log-spaced steps of each phase (the models fttrace.open gives at run.steps(member)).
    c.checkpoint = dict(every_chunks=5, keep=2, keep_log_spaced=8)

    # The microscope (fttrace/answer/evals/), run after fine-tuning in run-tree order.
    c.evals = ("reft", "planted", "prune", "probe", "attention", "patch")
    c.reft = dict(
        steps=500, batch_size=32, eval_every=25, schedule="constant", warmup_steps=0, weight_decay=0.01,
        grad_clip=1.0, b1=0.9, b2=0.999, member_batch=0,
        lr_mode="shared",  # shared: reFT LR = pretraining LR x lr_scale in every cell; tied: fine-tuning LR x lr_factor
        lr_scale=0.1,
        lr_factor=0.1,
        # "log": evaluated at 1, 2, 3, 5, 7, 10, ... steps below eval_every, then every eval_every steps
        # (fttrace.engine.train.eval_steps), so that revivals within the first steps are timed to the step
        eval_schedule="log",
        threshold=0.95,  # revived: C_PT >= threshold x the lineage's pretrained C_PT
        stop_at_threshold=True,  # a revived member stops training (the others go on alone)
        control=True,  # also train the control pretrained without C_PT
        control_lr_factors=(1.0, 10.0),  # the control at the reFT LR and at a larger one
    )
    c.prune = dict(
        score="taylor",  # taylor: remove units whose removal lowers the C_PT loss most; abs: |g.w|
        examples=512,  # sequences used to score units
        neuron_ks=(0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50),
        head_ks=(0, 1, 2, 3, 4),
        weight_fractions=(0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2),  # () leaves weight pruning out
        mask_budgets=(0.01, 0.05),  # learned-mask budgets: fraction of MLP neurons removed (() leaves it out)
        mask_steps=100, mask_lr=0.1, mask_penalty=10.0, mask_examples=128,
        tolerance=0.05,  # k_revive: C_PT within this of the pretrained C_PT
        random_draws=8,  # draws of k random neurons (the null of targeted pruning)
    )
    # fitter: "softmax" (trained with Adam for `steps` at `lr`) or "ridge" (closed form, penalty `ridge` per example)
    c.probe = dict(train_examples=1024, test_examples=512, fitter="softmax", steps=300, lr=0.01, weight_decay=1e-4,
                   ridge=1e-3)
    c.attention = dict(examples=256)
    c.patch = dict(examples=256)  # held-out O_PT and O_FT queries each, for activation patching
    return ml_collections.ConfigDict(c)


def tracr_config(program: str, ft_target: str) -> ml_collections.ConfigDict:
    """The default study on a Tracr-compiled program (`configs/tracr_*.py`): fine-tune it toward `ft_target`.

    The pretrained model is the compiled program (fttrace/answer/tasks/tracr_task.py), so `model` is unused and there is
    no pretraining: the pretrain phase only evaluates it (step 0). The `pretrain` section and `sweep.pretrain_lr`
    instead say how the reFT control is trained: the same architecture, randomly initialised and trained on the
    fine-tuning task (never on the compiled target) with the fine-tuning budget, then reverse-fine-tuned like
    every fine-tuned member. `sweep.prior` has no meaning here (nothing is pretrained on data) and stays 0.
    """
    c = pcfg_config()
    c.task = dict(
        name="tracr",
        program=program,  # a key of fttrace.answer.tasks.programs.TRACR_PROGRAMS
        ft_target=ft_target,  # a key of fttrace.answer.tasks.tracr_task.TARGETS[program], not the compiled one
        # The compiled heads' inverse temperature (fttrace/answer/tasks/programs.py): Tracr's own 100 unless a config
        # says why not; a value at which the compiled model errs is refused.
        softmax_coldness=100.0,
        priors=dict(),
    )
    # Fine-tuning: AdamW at a constant LR, as in the PCFG studies, to the criterion (held-out accuracy 0.9 on the
    # member's own fine-tuning distribution) within 3,000 steps. Named LRs scale `sweep.pretrain_lr` (here the
    # control's LR, 1e-3): small / medium / large = 1e-4 / 1e-3 / 1e-2, which for these compiled weights (O(1),
    # attention query and MLP input weights O(100)) span "barely moves them" to "rewrites them"; the names let the
    # analysis test the reference study's small/medium vs large LR claims. reFT: every cell at the control's LR.
    c.finetune.update(steps=3000, batch_size=32, eval_every=100, target=0.9,
                      lr_scale=dict(small=0.1, medium=1.0, large=10.0))
    c.pretrain.update(steps=1000, batch_size=32, eval_every=100, schedule="constant", warmup_steps=0)  # the control
    c.reft.update(steps=3000, batch_size=32, eval_every=50, lr_mode="shared", lr_scale=1.0)
    # 8 seeds: the claims' one-sided Wilcoxon tests over n seeds cannot go below p = 2^-n, and with six claims
    # Holm's first threshold is 0.05 / 6, so n >= 7 is the least that can reject at all.
    c.sweep.update(seeds=8, pretrain_lr=(1e-3,), prior=(0.0,), finetune_lr=("small", "medium", "large"),
                   spurious=(0.0, 0.5))
    c.eval.examples = 512
    c.evals = ("reft", "prune", "probe", "attention", "patch", "components")  # no "planted": no control query
    c.components = dict(examples=256)  # held-out C_PT and C_FT inputs each, for the activation change
    return c
