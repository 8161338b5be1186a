"""Fine-tuning a compiled max identifier toward the minimum: rewrite or wrapper?

The pretrained model is the RASP program max (vocab 0-5, length 8) compiled by Tracr into fttrace's transformer
(3 blocks: "n_greater" = a selector-width head + 18 MLP neurons, "is_max" = 2 MLP neurons, "max" = an aggregate
head). Every member starts from it; fine-tuning teaches it min, with the shortcut min == 5 - max (the compiled
answer read through a fixed relabelling) in a fraction C_Tr = 0 or 0.5 of the fine-tuning sequences. Grid: 5 seeds
x fine-tuning LR 1e-4 / 1e-3 / 1e-2 (AdamW, constant, 1000 steps of 32 sequences) x C_Tr = 30 fine-tuning members in
one group; then reFT (300 steps at LR / 10), its control (the same architecture trained from random init on min
for 1000 steps at 1e-3, then reverse-fine-tuned), pruning, probes, attention maps and the per-component change of
weights and activations against the compiled model (phase "components").

    fttrace run configs/tracr_max.py --workdir runs/tracr_max

Measured on the shared 2-core CPU (other jobs running): 7 min. Headline (5 seeds): min is learnt at every LR
(C_FT 0.88 / 0.91 / 1.00 at small / medium / large, C_Tr 0) and C_PT drops from 1.00 to 0.00 everywhere; no
pruning revives it, probes read max no better than from the random init (0.62-0.70 vs 0.67), reFT is no faster
than the control: the compiled max does not survive, although its weights move by only 0.1-10%.

`configs/tracr_max.py:tiny` is the test form (2 seeds x 4 LRs x 2 C_Tr = 16 fine-tuning members, a few steps).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tracr_common  # noqa: E402


def get_config(arg=None):
    c = tracr_common.tracr_study("max_identifier", "min", arg)
    c.prune.update(neuron_ks=(0, 1, 2, 3, 5, 8, 12, 18, 27, 36), head_ks=(0, 1, 2, 3))
    return c
