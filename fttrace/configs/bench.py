"""Throughput benchmark: member-steps per second of the engine's training step.

Trains one named model shape for a fixed number of steps at each member count: every member in one vmapped
program (the engine, `vmap`; `vmap_full` computes every position as a plain loop does), the same program one member
at a time, and a plain PyTorch loop (with `pip install 'fttrace[torch]'`). Each row names the work it does: like
for like is vmap_full against torch (fttrace/bench/throughput.py). Data are random tokens of the shape's context and
vocabulary drawn on device per member (`--config.data=task` samples the PCFG task of the `task` section instead);
`--config.objective=lm` trains the language models' next-token loss at every position instead of the answer
position's; `--config.objective=decode` times the batched decoder sampling stories (sampled tokens/s, against
reading the whole cache at every step and one member at a time); `--config.objective=compaction` times one phase
with a share of its members stopped (`compaction.stopped`), with and without compaction. The optimiser is the `pretrain` section's. Reports member-steps/s, tokens/s, TFLOP/s, MFU, memory per
member, compile time and the roofline of one member's step.

    fttrace bench configs/bench.py --config.shape=small --config.members="(1,16,64)" --out bench.json
    fttrace bench configs/bench.py --config.shape=stories --config.objective=lm --config.modes="('vmap','sequential')"
    fttrace bench configs/bench.py --config.shape=stories --config.objective=decode --config.members="(8,)"

Shapes: ref (d128 L4 H4 T64 V64 B64), large (d256 L6 H8 T128 V512 B32), small (d64 L2 H4 T32 V32 B16),
tiny (d32 L2 H2 T16 V16 B8); the language models' stories (d64 L2 H4 T240 V1024 B8), stories_gpu (d256 L6 H8 T384
V1024 B64) and canary (d64 L2 H4 T48 V320 B32); B is sequences per member per step. For bf16 compute:
--config.model.dtype=bfloat16. On a GPU machine, benchmarks/device_check.sh runs the accelerator checks in one call.

Measured on the shared 2-core CPU machine (Xeon, AVX-512; float32; other jobs running, so absolute numbers
drift by tens of percent), 50 steps, best of 3 interleaved rounds, member-steps/s at 1 / 16 / 64 members:
  small  vmap 211 / 221 / 206   sequential 210 / 213 / 208   torch 96 / 99 / 94
         64 members: 2.2x torch; 39.8 GFLOP/s = 30% of the 2048^2 matmul timed in the same run (133 GFLOP/s)
  tiny   vmap 1,390 / 1,763 / 1,778   sequential 1,498 / 1,499 / 1,438   torch 253 / 240 / 221
         64 members: 8.0x torch
Wall time with the defaults there: about 12 minutes for small and 7 for tiny, most of it the torch loop and
the one-member-at-a-time runs. Notes, floors and profiles: benchmarks/NOTES.md.
"""
from fttrace.answer.defaults import pcfg_config


def get_config():
    c = pcfg_config()
    c.shape = "small"  # ref | large | small | tiny (fttrace.bench.throughput.SHAPES)
    c.members = (1, 16, 64)
    c.modes = ("vmap", "vmap_full", "sequential", "torch")
    c.steps = 50  # steps per timed run
    c.repeats = 3  # timed runs per measurement; the fastest counts
    c.data = "random"  # random | task
    c.objective = "answer"  # answer: the loss at the answer position (PCFG, Tracr) | lm: next token everywhere
    # | decode: the batched decoder's sampling (fttrace/bench/decode.py; its modes are decode.modes)
    # | compaction: one phase with a share of its members stopped, with and without compaction
    # (fttrace/bench/compaction.py)
    c.decode = dict(modes=("vmap", "vmap_whole_cache", "sequential"), prompts=64, prompt_length=24,
                    temperature=1.0, top_k=0)
    c.compaction = dict(stopped=(0.0, 0.5, 0.75, 0.875), chunks=10, examples=256)
    c.lr = 1e-3
    c.matmul_size = 0  # side of the large matmul timed as the peak; 0: 2048 on CPU, 8192 on accelerators
    c.pretrain.member_batch = 0  # members vmapped together; 0: the engine's choice (train.train_member_batch)
    return c
