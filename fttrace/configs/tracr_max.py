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

Measured (`fttrace run configs/tracr_max.py --workdir runs/tracr_max`: 4 min 20 s wall on the 2-core CPU with two
other studies beside it; `python -m analysis summary runs/tracr_max`; mean over 8 seeds [95% CI]):
- Regime: the compiled model has C_PT 1.00 and C_FT 0.00 (= operand-blind), probe selectivity 0.72; no cell is
  flagged: every member met the criterion (median stop step 350 / 150 / 100 at small / medium / large LR with
  C_Tr 0, 100 with C_Tr 0.5); C_FT at C_Te 0 after 0.92 [0.91, 0.93] / 0.95 [0.94, 0.96] / 0.98 [0.97, 0.99] (C_Tr
  0), 0.83 / 0.85 / 0.98 (C_Tr 0.5; C_Te 1: 0.98-1.00); C_PT 0.00 in every cell.
- Classes (48 judged): hidden wrapper 67% [53, 78] (8/8 and 7/8 at the small LR, 7/8 and 7/8 at medium), overwrite
  33% (8/8 and 5/8 at the large LR); no no-op, no reuse.
- Nulls. Pruning (T_prune +0.0034): targeted C_PT gain +0.027 [+0.002, +0.071] / +0.009 / +0.001 at small / medium
  / large LR (C_Tr 0) against random neurons +0.002 / -0.000 / +0.000 and the control +0.001, while the same units
  take C_FT down by 0.40 / 0.59 / 0.09. Probe selectivity for max: compiled 0.72, fine-tuned 0.39 [0.38, 0.41],
  reFT 0.66, the control that never had max 0.37, untrained 0.36: after fine-tuning the probe reads max no better
  than from a random model. reFT (Kaplan-Meier, 3,000 steps, T_reft 200): median 150 / 150 / 550 steps against
  500 for the control (log-rank p 1.5e-5 / 0.087 / 0.65); Cox hazard ratio per log10 fine-tuning LR 0.30 [0.19,
  0.48], per C_Tr 0.58 [0.18, 1.94]. Patching the compiled parent's first block into a small-LR member brings C_PT
  back by +0.997 (8/8 seeds, both C_Tr); at the large LR the best patch (the third block) gives +0.07-0.18.
- Components: pruning's first-ranked units lie in "n_greater" (its head 1.00, 72-85% of its neurons, chance 0.33)
  in the compiled model and after small/medium-LR fine-tuning; after large-LR fine-tuning the ranking moves to the
  "max" head (0.75-0.88) and "is_max" (0.56, chance 0.04).
- Claims: 1 supported +0.015 [+0.002, +0.031] (p(Holm) 0.031; below the SESOI +0.05 in size); 2 refuted -0.244;
  3 supported x3.05 [2.22, 4.20] (p(Holm) 0.023); 4a refuted; 4b inconclusive (p(Holm) 0.16); 4c supported x3.51
  [2.64, 4.71] (p(Holm) 0.023). With 5 seeds (`--config.sweep.seeds=5`) no claim could be supported: the smallest
  attainable p, 2^-5, is above Holm's 0.05 / 6, which is why the study runs 8.
Attention change has no seed-to-seed null here (every pretrained member is the same compiled model); the summary
prints the raw change instead: total variation from the compiled parent's attention 0.51 on average over heads
(0.45-0.61 over members).

`configs/tracr_max.py:tiny` is the test form (2 seeds x 4 LRs x 2 C_Tr = 16 fine-tuning members, a few steps):
143 s on the 2-core AMD EPYC, AVX2 only, an empty compilation cache (`time fttrace run tracr_max:tiny`).
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
