"""Fine-tuning a compiled counter: does fine-tuning rewrite Tracr's count("a") circuit, or wrap it?

The pretrained model is the RASP program count("a") (vocab a-d, length 8) compiled by Tracr into fttrace's
transformer (1 block: one selector-width head and 18 MLP neurons, both the component "count_a"). Every member
starts from it; fine-tuning teaches it count("b"), with the shortcut count("b") == count("a") (the compiled answer
is already right) in a fraction C_Tr = 0 or 0.5 of the fine-tuning sequences. Grid: 8 seeds x fine-tuning LR
1e-4 / 1e-3 / 1e-2 (AdamW, constant, 32 sequences a step, to the criterion of held-out accuracy 0.9 within 3,000
steps) x C_Tr = 48 fine-tuning members in one group; then reFT at one shared LR (1e-3, 3,000 steps), its control
(the same architecture trained from random init on count("b"), then reverse-fine-tuned), pruning with its nulls,
probes with a control target, attention maps, activation patching from the compiled parent and the per-component
change of weights and activations against the compiled model.

    fttrace run configs/tracr_counter.py --workdir runs/tracr_counter
    python -m analysis summary runs/tracr_counter

Measured with `--config.sweep.seeds=5` (30 fine-tuning members; 10 min 44 s wall on the 2-core CPU while another
study ran beside it), mean over seeds [95% bootstrap CI], from `python -m analysis summary`: the regime fails. The
compiled model has C_PT 1.00 (C_FT 0.14, its operand-blind level); no member of any cell met the criterion in
3,000 steps, so every cell is flagged "fine-tuning did not learn C_FT here" and every member is a no-op: C_FT at
C_Te 0 after fine-tuning 0.13 [0.08, 0.18] / 0.26 [0.22, 0.29] / 0.40 [0.31, 0.50] at small / medium / large LR
(C_Tr 0), while the control learns count("b") from random init to 0.99 within its 1,000 steps at 1e-3. Fine-tuning
still destroys C_PT (0.13-0.23 after, except 0.76 at the small LR with C_Tr 0.5, where the shortcut keeps it) and
the probe's selectivity for count("a") (0.75 compiled, 0.19 fine-tuned, -0.03 for the control and untrained
models); patching the compiled block back into a small-LR member restores C_PT by +0.87. The claims are not tested
(no member learnt its task). The compiled head's query weights and the MLP's input weights are O(100), so the
softmax and the ReLUs are saturated: the likely reason the compiled weights give fine-tuning so little gradient
toward count("b"). Pruning cannot locate anything here beyond the trivial: the compiled model is one component.

A longer budget does not help. Pilot (`fttrace run configs/tracr_counter.py --workdir /tmp/trpilot
--config.sweep.seeds=2 --config.evals="()" --config.finetune.steps=20000 --config.finetune.eval_every=500
--config.sweep.finetune_lr="(1.0,10.0,30.0,100.0)" --config.sweep.spurious="(0.0,)"`: LRs 1e-3 / 1e-2 / 3e-2 / 1e-1,
C_Tr 0, 20,000 steps; 51 s; the results table it prints and its results.parquet): no member met the criterion;
the best C_FT any member reached at any evaluation was 0.31 (1e-3) and 0.29 (the others), final C_FT 0.21 / 0.23 at
1e-3, and at 1e-2 and above 5 of 6 members diverged (non-finite) within 3-834 steps, frozen at C_FT 0.11-0.29.
The compiled weights sit where the loss is extremely sharp: one AdamW step at 1e-2 takes the held-out C_FT loss
from 2.23 to 1.2e6 and 2.5e7 (2 seeds; the same command with `--config.finetune.steps=20
--config.finetune.eval_every=1 --config.sweep.finetune_lr="(10.0,)"`, `ft_loss` by step in its results.parquet).
Smaller LRs learn a little more and rarely escape (the same command with `--config.sweep.finetune_lr="(0.03,0.1,
0.3)"` for 20,000 steps, then `"(0.001,0.003,0.01)"` for `--config.finetune.steps=40000
--config.finetune.eval_every=1000`; 38 s and 63 s): final C_FT 0.58 / 0.57 at 3e-5, 0.27 / 0.37 at 1e-4, 0.13 / 0.13 at
3e-4; at 1e-6 / 3e-6 / 1e-5 the members plateau at 0.32-0.43 by step 8,000, and one member (1e-6) left its plateau
at step ~20,000 and met the criterion at step 26,000 (C_FT 0.99): 1 of 20 members over the three pilots. C_PT falls
to 0.15-0.21 within 8,000 steps at every LR. Learning count("b") from this start is the open problem of this
config; its verdicts describe no-ops.

`configs/tracr_counter.py:tiny` is the test form (2 seeds x 4 LRs x 2 C_Tr = 16 fine-tuning members, a few steps).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tracr_common  # noqa: E402

VARIANTS = tracr_common.VARIANTS


def get_config(arg=None):
    c = tracr_common.tracr_study("counter", "count_b", arg)
    c.prune.update(neuron_ks=(0, 1, 2, 3, 4, 6, 8, 12, 18), head_ks=(0, 1))
    return c
