"""Fine-tuning a compiled counter: does fine-tuning rewrite Tracr's count("a") circuit, or wrap it?

The pretrained model is the RASP program count("a") (vocab a-d, length 8) compiled by Tracr into fttrace's
transformer (1 block: one selector-width head and 18 MLP neurons, both the component "count_a"). Every member
starts from it; fine-tuning teaches it count("b"), with the shortcut count("b") == count("a") (the compiled answer
is already right) in a fraction C_Tr = 0 or 0.5 of the fine-tuning sequences. Grid: 5 seeds x fine-tuning LR
1e-4 / 1e-3 / 1e-2 (AdamW, constant, 1000 steps of 32 sequences) x C_Tr = 30 fine-tuning members in one group;
then reFT (300 steps at LR / 10), its control (the same architecture trained from random init on count("b") for
1000 steps at 1e-3, then reverse-fine-tuned), pruning, probes, attention maps and the per-component change of
weights and activations against the compiled model (phase "components").

    fttrace run configs/tracr_counter.py --workdir runs/tracr_counter

Measured on the shared 2-core CPU (other jobs running): 3 min 15 s. Headline (5 seeds): fine-tuning does not learn
count("b") from the compiled counter (C_FT 0.28 / 0.31 / 0.35 at small / medium / large LR, C_Tr 0; the control
learns it from random init to 0.99 in the same 1000 steps) yet loses C_PT (1.00 -> 0.14 / 0.21 / 0.19); only small
LR with C_Tr 0.5 keeps it (0.86, reFT back in 25 steps). Pruning and probes revive nothing elsewhere; the compiled
MLP's output changes by 4-5x its norm while its weights move by 0.2-10%.

The LRs span "barely moves the compiled weights" to "rewrites them" for this model, whose compiled weights are
O(1) (MLP input weights O(100)); seeds differ only in their data and in the control's init.
`configs/tracr_counter.py:tiny` is the test form (2 seeds x 4 LRs x 2 C_Tr = 16 fine-tuning members, a few steps).
"""
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import tracr_common  # noqa: E402


def get_config(arg=None):
    c = tracr_common.tracr_study("counter", "count_b", arg)
    c.prune.update(neuron_ks=(0, 1, 2, 3, 4, 6, 8, 12, 18), head_ks=(0, 1))
    return c
