"""`fttrace bench --config.objective=decode`: how fast the batched decoder samples, vmapped over members.

The stories study samples every member's stories at every eval step (`lm/decode.py`); this measures that work
alone, on freshly initialised members of a named shape (`bench.SHAPES`) and random prompts of
`decode.prompt_length` tokens, each member writing `decode.prompts` stories up to the shape's context. Modes:

  vmap              every member at once (`generate_members`), attention over the positions so far rounded up
                    to `lm.decode.WINDOW` (the decoder as the studies run it)
  vmap_whole_cache  the same program reading every position of the cache at every step (window = the context)
  sequential        the vmap program with one member, run for each member in turn

The modes sample the same tokens for the same keys; each run checks that, and says so in the report
(`same_samples`). Untrained members rarely write EOS, so every row runs to the context's end: the most work a
decode can take. Throughput is sampled tokens per second (members x prompts x new tokens / seconds of the fastest
of `repeats` timed runs after one untimed one; the modes take turns, as in `fttrace.bench.throughput`). There is no
PyTorch decoder to compare with.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from fttrace.bench import throughput as bench
from fttrace.config import positive_int
from fttrace.errors import UserError
from fttrace.lm.decode import WINDOW, generate_members
from fttrace.model.transformer import ModelConfig, Transformer
from fttrace.lm.tokenizer import EOS, PAD

MODES = ("vmap", "vmap_whole_cache", "sequential")
PROMPT_FIRST = EOS + 1  # prompt tokens are drawn from [PROMPT_FIRST, vocab): no PAD, UNK, BOS or EOS


def check(config) -> None:
    """Bad decode-bench keys -> UserError naming the key."""
    d = config.decode
    unknown = [m for m in d.modes if m not in MODES]
    if unknown or not d.modes:
        raise UserError(f"config key 'decode.modes': unknown mode(s) {unknown}; known: {', '.join(MODES)}")
    bench.check_shape(config)
    context = bench.SHAPES[config.shape].context
    positive_int(config, "decode.prompts")
    positive_int(config, "decode.prompt_length")
    if d.prompt_length >= context:
        raise UserError(f"config key 'decode.prompt_length': {d.prompt_length} leaves no room to write in the "
                        f"{config.shape} shape's context of {context}")
    positive_int(config, "repeats")
    bench.check_members(config)


class Decoder:
    """One mode's compiled decode of `members` members, ready to time."""

    def __init__(self, cfg: ModelConfig, params, prompts, keys, max_new: int, temperature: float, top_k: int,
                 mode: str):
        window = cfg.max_len if mode == "vmap_whole_cache" else WINDOW
        lengths = np.full(prompts.shape[0], prompts.shape[1], np.int32)
        run = jax.jit(lambda p, k: generate_members(cfg, p, prompts, lengths, k, max_new, temperature, top_k,
                                                    window=window))
        members = keys.shape[0]
        if mode == "sequential":
            self.inputs = [(jax.tree.map(lambda x, i=i: x[i:i + 1], params), keys[i:i + 1]) for i in range(members)]
        else:
            self.inputs = [(params, keys)]
        t0 = time.perf_counter()
        self.compiled = run.lower(*self.inputs[0]).compile()
        self.compile_s = time.perf_counter() - t0
        self.samples = self.decode()  # untimed: the first run

    def decode(self) -> np.ndarray:
        return np.concatenate([np.asarray(self.compiled(p, k)) for p, k in self.inputs])

    def run(self) -> float:
        t0 = time.perf_counter()
        jax.block_until_ready([self.compiled(p, k) for p, k in self.inputs])
        return time.perf_counter() - t0


def run_decode_bench(config, log=None) -> dict:
    """Every decode mode at every member count; the results as a JSON-ready dict. `log(line)` hears progress."""
    check(config)
    d, shape = config.decode, bench.SHAPES[config.shape]
    cfg = ModelConfig(vocab_size=shape.vocab, max_len=shape.context, d_model=shape.d_model,
                      n_layers=shape.n_layers, n_heads=shape.n_heads, dtype="float32")
    max_new = shape.context - d.prompt_length
    prompts = np.asarray(jax.random.randint(jax.random.PRNGKey(config.seed), (d.prompts, d.prompt_length),
                                            PROMPT_FIRST, shape.vocab), np.int32)
    results = []
    for members in config.members:
        seeds = jax.random.split(jax.random.PRNGKey(config.seed + 1), members)
        params = jax.vmap(lambda k: Transformer(cfg).init(k, jnp.zeros((1, shape.context), jnp.int32))["params"])(
            seeds)
        keys = jax.random.split(jax.random.PRNGKey(config.seed + 2), members)
        if log:
            log(f"{members} members: compiling {', '.join(d.modes)}")
        decoders = {mode: Decoder(cfg, params, prompts, keys, max_new, float(d.temperature), int(d.top_k), mode)
                    for mode in d.modes}
        first = next(iter(decoders.values())).samples
        same = all(np.array_equal(dec.samples, first) for dec in decoders.values())
        seconds = bench.timed_rounds(decoders, config.repeats, f"{members} members", log)
        written = int((first != PAD).sum())  # tokens the rows wrote (PAD after a row's EOS or the context end)
        for mode, dec in decoders.items():
            best = min(seconds[mode])
            results.append(dict(mode=mode, members=members, prompts=d.prompts, new_tokens=max_new,
                                sampled_tokens_per_s=members * d.prompts * max_new / best,
                                written_tokens=written, seconds=seconds[mode], compile_s=dec.compile_s,
                                same_samples=same, device=bench.device_name()))
        del decoders
    for r in results:
        base = next(b for b in results if b["members"] == r["members"])
        r["speedup_vs_first_mode"] = r["sampled_tokens_per_s"] / base["sampled_tokens_per_s"]
    return dict(objective="decode", shape=dict(name=config.shape, d_model=shape.d_model, n_layers=shape.n_layers,
                                               n_heads=shape.n_heads, context=shape.context, vocab=shape.vocab),
                prompt_length=d.prompt_length, temperature=float(d.temperature), top_k=int(d.top_k),
                window=WINDOW, repeats=config.repeats, device=bench.device_name(), jax_version=jax.__version__,
                results=results)


def format_decode_table(report: dict) -> str:
    """The results as an aligned text table, one line per (members, mode)."""
    header = ("mode", "members", "prompts", "new tokens", "sampled tokens/s", "x first mode", "same samples",
              "compile s")
    rows = [(r["mode"], str(r["members"]), str(r["prompts"]), str(r["new_tokens"]),
             f"{r['sampled_tokens_per_s']:,.0f}", f"{r['speedup_vs_first_mode']:.2f}",
             "yes" if r["same_samples"] else "NO", f"{r['compile_s']:.1f}") for r in report["results"]]
    s = report["shape"]
    title = (f"decode, {s['name']}: d{s['d_model']} L{s['n_layers']} H{s['n_heads']} T{s['context']} V{s['vocab']}, "
             f"prompts of {report['prompt_length']} tokens, temperature {report['temperature']}, top_k "
             f"{report['top_k']}, window {report['window']}, {report['device']}")
    return "\n".join([title, *bench.aligned(header, rows)])
