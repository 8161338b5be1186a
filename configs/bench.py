"""Throughput benchmark: member-steps per second of the engine's training step.

Trains one named model shape for a fixed number of steps at each member count, three ways: every member in one
vmapped program (the engine), the same program one member at a time, and a plain PyTorch loop (with
`pip install 'fttrace[torch]'`). Data are random tokens of the shape's context and vocabulary drawn on device
per member (`--config.data=task` samples the PCFG task of the `task` section instead); the optimiser is the
`pretrain` section's. Reports member-steps/s, tokens/s, TFLOP/s, MFU, memory per member and compile time.

    fttrace bench configs/bench.py --config.shape=small --config.members="(1,16,64)" --out bench.json

Shapes: ref (d128 L4 H4 T64 V64 B64), large (d256 L6 H8 T128 V512 B32), small (d64 L2 H4 T32 V32 B16),
tiny (d32 L2 H2 T16 V16 B8); B is sequences per member per step. For bf16 compute: --config.model.dtype=bfloat16.

@@NUMBERS@@
About 2 minutes for small, 1 for tiny. Notes and profiles: benchmarks/NOTES.md.
"""
from fttrace.defaults import pcfg_config


def get_config():
    c = pcfg_config()
    c.shape = "small"  # ref | large | small | tiny (fttrace.bench.SHAPES)
    c.members = (1, 16, 64)
    c.modes = ("vmap", "sequential", "torch")
    c.steps = 50  # steps per timed run
    c.repeats = 3  # timed runs per measurement; the fastest counts
    c.data = "random"  # random | task
    c.lr = 1e-3
    return c
