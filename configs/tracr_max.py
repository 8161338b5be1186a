"""Fine-tuning a compiled max identifier toward the minimum: rewrite or wrapper?

The pretrained model is the RASP program max (vocab 0-5, length 8) compiled by Tracr into fttrace's transformer
(3 blocks: "n_greater" = a selector-width head + 18 MLP neurons, "is_max" = 2 MLP neurons, "max" = an aggregate
head). Every member starts from it; fine-tuning teaches it min, with the shortcut min == 5 - max (the compiled
answer read through a fixed relabelling) in a fraction C_Tr = 0 or 0.5 of the fine-tuning sequences. Grid: 8 seeds
x fine-tuning LR 1e-4 / 1e-3 / 1e-2 (AdamW, constant, 32 sequences a step, to the criterion of held-out accuracy 0.9
within 3,000 steps) x C_Tr = 48 fine-tuning members in one group; then reFT at one shared LR (1e-3, 3,000 steps),
its control (the same architecture trained from random init on min, then reverse-fine-tuned), pruning with its
random-neuron and control nulls, probes with a control target, attention maps, activation patching from the
compiled parent and the per-component change of weights and activations against the compiled model.

    fttrace run configs/tracr_max.py --workdir runs/tracr_max
    python -m analysis summary runs/tracr_max

Measured with `--config.sweep.seeds=5` (30 fine-tuning members; 22 min 17 s wall on the 2-core CPU while another
study ran beside it), mean over seeds [95% bootstrap CI], from `python -m analysis summary`:
  regime: the compiled model has C_PT 1.00 and C_FT 0.00; every member of every cell met the criterion (median stop
    step 500 / 200 / 100 at small / medium / large LR, C_Tr 0); C_FT at C_Te 0 after fine-tuning 0.92 [0.89, 0.94] /
    0.92 [0.89, 0.94] / 0.97 [0.95, 1.00], and C_PT 0.00 in every cell.
  classes (30 members): hidden wrapper 70% [52%, 83%] (all 10 at the small LR, 8 of 10 at medium), overwrite 30% (7
    of 10 at the large LR); T_reft = 350 steps, T_prune = +0.003.
  reFT (Kaplan-Meier, 3,000-step budget): median 150 / 250 / 750 steps at small / medium / large LR against 450 for
    the control at the same LR (log-rank p 0.0004 at small, 0.36 at medium, 0.50 at large); Cox hazard ratio of
    revival per log10 fine-tuning LR 0.27 [0.14, 0.52].
  pruning revives little: targeted C_PT gain +0.041 [0.000, 0.122] at small LR, C_Tr 0, against +0.001 for random
    neurons and +0.002 on the control, while the same units take C_FT down by 0.41; elsewhere <= +0.02.
  patching: the compiled parent's first block patched into a small-LR member brings C_PT back by +0.996 (5 of 5
    seeds, both C_Tr); at the large LR the best patch (the third block) gives only +0.12-0.15.
  probes: selectivity (max minus the control target) compiled 0.72, fine-tuned 0.39 [0.38, 0.40], reverse-fine-
    tuned 0.65, the control that never had max 0.37, untrained 0.36: after fine-tuning the probe reads max no better
    than from a random model.
  components: pruning's first-ranked units lie in "n_greater" (its head 1.00 and 78-94% of its neurons in the compiled
    model and after small/medium-LR fine-tuning, chance 0.33); after large-LR fine-tuning the ranking moves to the
    "max" head (1.00) and "is_max" (0.40, chance 0.04).
  claims: with 5 seeds no claim can be supported (the smallest attainable p, 2^-5, is above Holm's 0.05 / 6), which is
    why the study runs 8: 1 (pruning) and 2 (probe selectivity kept, then read over every learnt member; it now
    reads suppressed members only) refuted, 3 (reFT faster than the control) inconclusive, x2.39 [1.47, 3.87].
Attention change has no seed-to-seed null here (every pretrained member is the same compiled model); the summary
prints the raw change instead: total variation from the compiled parent's attention 0.52 on average over heads
(0.45-0.63 over members).

`configs/tracr_max.py:tiny` is the test form (2 seeds x 4 LRs x 2 C_Tr = 16 fine-tuning members, a few steps).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tracr_common  # noqa: E402

VARIANTS = tracr_common.VARIANTS


def get_config(arg=None):
    c = tracr_common.tracr_study("max_identifier", "min", arg)
    c.prune.update(neuron_ks=(0, 1, 2, 3, 5, 8, 12, 18, 27, 36), head_ks=(0, 1, 2, 3))
    return c
