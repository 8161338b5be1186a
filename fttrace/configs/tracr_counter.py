"""Fine-tuning a compiled counter: does fine-tuning rewrite Tracr's count("a") circuit, or wrap it?

The pretrained model is the RASP program count("a") (vocab a-d, length 8) compiled by Tracr into fttrace's
transformer (1 block: one selector-width head and 18 MLP neurons, both the component "count_a"), its heads at
inverse temperature 10 (`task.softmax_coldness`, below). Every member starts from it; fine-tuning teaches it
count("b"), with the shortcut count("b") == count("a") (the compiled answer is already right) in a fraction
C_Tr = 0 or 0.5 of the fine-tuning sequences. Grid: 8 seeds x fine-tuning LR 1e-4 / 1e-3 / 1e-2 (AdamW, constant,
32 sequences a step, to the criterion of held-out accuracy 0.9 within 10,000 steps) x C_Tr = 48 fine-tuning members
in one group; then reFT at one shared LR (1e-3, 3,000 steps), its control (the same architecture trained from
random init on count("b"), then reverse-fine-tuned), pruning with its nulls, probes with a control target,
attention maps, activation patching from the compiled parent and the per-component change of weights and
activations against the compiled model.

    fttrace run configs/tracr_counter.py --workdir runs/tracr_counter
    python -m analysis summary runs/tracr_counter

Why inverse temperature 10. Tracr compiles every head at 100: the selector-width head gives BOS and each "a" the
logit 100 and every other token 0, so an unselected token's weight is e^-100, which float32 rounds to 0, and no
gradient reaches the head's choice of tokens. At 100 no member learnt count("b"): with 5 seeds and 3,000 steps
(`--config.task.softmax_coldness=100.0 --config.finetune.steps=3000 --config.sweep.seeds=5`) every cell was flagged,
C_FT at C_Te 0 after 0.13 / 0.26 / 0.40 at small / medium / large LR; pilots of up to 40,000 steps at LRs 1e-6 to
1e-1 (`--config.evals="()"`, 2 seeds, C_Tr 0) brought 1 of 20 members to the criterion, and at >= 1e-2 5 of 6
members diverged (one AdamW step at 1e-2 took the held-out loss from 2.23 to 1.2e6-2.5e7). Lowering the coldness
computes the same function while the model stays exact: `fttrace run` refuses a coldness at which the compiled
model errs and says how often (`--config.task.softmax_coldness=7.0`: "answers 6561 of 65536 checked inputs
wrongly"; 5.0: 58077); at 8 and above it is exact on all 65,536 inputs. 10 keeps a margin above that edge; at 8
fewer members learnt (`--config.task.softmax_coldness=8.0 --config.sweep.seeds=4 --config.evals="()"`: 50% at
the medium LR with C_Tr 0, against 100% at 10). tests/test_tracr_task.py checks that the same fine-tuning learns
count("b") at 10 and not at 100.

Measured (`fttrace run configs/tracr_counter.py --workdir runs/tracr_counter`: 4 min 09 s wall on the 2-core CPU
with another study beside it; `python -m analysis summary runs/tracr_counter`; mean over 8 seeds [95% CI]):
- Regime. The compiled model: C_PT 1.00, C_FT 0.14 (= operand-blind 0.14), probe selectivity for count("a") 0.75.
  With C_Tr 0 fine-tuning learns count("b"): every member at the small and medium LR met the criterion (median
  stop step 2,800 / 400; C_FT at C_Te 0 after 0.92 [0.91, 0.94] / 0.95 [0.93, 0.96]), 50% at the large LR (the
  others plateau at C_FT 0.56-0.60, none diverged). The shortcut stops it: with C_Tr 0.5, 0% / 12% / 38% of the
  members met the criterion (C_FT at C_Te 0 0.53 / 0.66 / 0.65 while C_Te 1 gives 0.99-1.00); 30,000 steps do not
  change that (`--config.sweep.seeds=4 --config.evals="()" --config.finetune.steps=30000
  --config.finetune.eval_every=250`: 0 / 2 / 2 of 4), and at the small LR any shortcut does: with C_Tr 0.1 / 0.2 /
  0.3 no member met the criterion, while at the medium LR 4 / 2 / 4 of 4 did (`--config.sweep.seeds=4
  --config.evals="()" --config.sweep.spurious="(0.0,0.1,0.2,0.3,0.5)"`). Four cells are flagged: every C_Tr 0.5
  cell and large LR, C_Tr 0.
- Classes (48 judged): overwrite 8/8 at the small LR, C_Tr 0; hidden wrapper 5/8 at the medium LR, C_Tr 0 (3
  overwrite); the flagged cells are mostly no-ops. Overall no-op 50%, hidden wrapper 17%, overwrite 33%.
- Nulls. Probe selectivity for count("a"): compiled 0.75, fine-tuned with C_Tr 0 -0.03 at every LR (= the control
  and the untrained model, -0.03), with C_Tr 0.5 0.49 / 0.35 / -0.02; reFT children 0.49. Pruning (T_prune +0.0004):
  targeted C_PT gain -0.043 / -0.001 / +0.002 at small / medium / large LR, C_Tr 0, against random neurons -0.089
  / -0.076 / -0.003 and the control -0.037. reFT: median 750 / 1,100 steps / not reached (1 of 7 revived) at small /
  medium / large LR against the control's 500-600 (log-rank p 0.025 / 0.004 / 0.0003: reFT is slower than
  learning C_PT from scratch). Patching the compiled parent's block back restores C_PT by +0.53 / +0.43 / +0.10,
  and the head alone removes most of C_FT (-0.67 / -0.70 / -0.63): fine-tuning re-aims the selector head.
- Claims: 1 supported +0.058 [+0.035, +0.078] (power 0.50 at SESOI +0.05, p(Holm) 0.047); 2 refuted -0.70;
  3 refuted x0.58 [0.43, 0.75] (reFT slower than the control); 4a-4c inconclusive (5 seeds with a suppressed
  large-LR member). In this compiled model fine-tuning re-aims the selector head from "a" to "b" and keeps the
  counting MLP (its weights move 0.5% at the small LR, C_Tr 0): count("a") is overwritten, not wrapped.

`configs/tracr_counter.py:tiny` is the test form (2 seeds x 4 LRs x 2 C_Tr = 16 fine-tuning members, a few steps):
101 s on the 2-core AMD EPYC, AVX2 only, an empty compilation cache (`time fttrace run tracr_counter:tiny`).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tracr_common  # noqa: E402

VARIANTS = tracr_common.VARIANTS


def get_config(arg=None):
    c = tracr_common.tracr_study("counter", "count_b", arg)
    c.task.softmax_coldness = 10.0  # exact on all 4^8 inputs down to 8; at Tracr's 100 fine-tuning cannot learn
    if arg is None:
        c.finetune.steps = 10000
    c.prune.update(neuron_ks=(0, 1, 2, 3, 4, 6, 8, 12, 18), head_ks=(0, 1))
    return c
