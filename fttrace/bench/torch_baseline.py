"""The PyTorch side of `fttrace bench`: the per-model eager loop a researcher would write, for comparison.

Same architecture as `fttrace.model.transformer.Transformer` (pre-LayerNorm blocks, learned positions, tanh GELU, causal
attention, untied unembedding), same data shape, AdamW with the same hyperparameters, gradient clipping and
warmup/cosine schedule. It computes the logits of every position and, for the answer-position objective, reads the
last one, as a plain loop does; for the LM objective its loss is the next-token cross-entropy at every position.
Models train one after another on the GPU if there is one (bf16 compute under autocast where the bench's dtype
is bfloat16, AdamW fused into one kernel), else on the CPU, with torch's default intra-op
threads or one thread, whichever a short trial finds faster: on a busy machine, torch's OpenMP threads wait for
each other at every small op and the default can run ten times slower than one thread. This is the only module
of fttrace that imports torch.
"""
from __future__ import annotations

import importlib.util
import math
import time

import numpy as np


def available() -> bool:
    return importlib.util.find_spec("torch") is not None


def supports(cfg) -> bool:
    """Whether the PyTorch model mirrors this `ModelConfig` (it always has LayerNorm, biases, causal attention)."""
    return cfg.layer_norm and cfg.causal and cfg.use_bias


def _modules():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            d, inner = cfg.d_model, cfg.n_heads * cfg.hd
            self.heads, self.hd = cfg.n_heads, cfg.hd
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
            self.q, self.k, self.v = nn.Linear(d, inner), nn.Linear(d, inner), nn.Linear(d, inner)
            self.out = nn.Linear(inner, d)
            self.fc_in, self.fc_out = nn.Linear(d, cfg.mlp), nn.Linear(cfg.mlp, d)
            self.act = nn.GELU(approximate="tanh") if cfg.activation == "gelu" else nn.ReLU()

        def forward(self, x, causal_mask):
            b, t, _ = x.shape
            h = self.ln1(x)
            q, k, v = (proj(h).view(b, t, self.heads, self.hd).transpose(1, 2) for proj in (self.q, self.k, self.v))
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
            scores = scores.masked_fill(~causal_mask[:t, :t], float("-inf"))
            heads = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, -1)
            x = x + self.out(heads)
            return x + self.fc_out(self.act(self.fc_in(self.ln2(x))))

    class Model(nn.Module):
        def __init__(self, cfg):
            super().__init__()
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos = nn.Parameter(torch.randn(cfg.max_len, cfg.d_model) * 0.02)
            self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
            self.ln_f = nn.LayerNorm(cfg.d_model, eps=1e-6)
            self.unembed = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
            self.register_buffer("causal_mask", torch.ones(cfg.max_len, cfg.max_len, dtype=torch.bool).tril())

        def forward(self, tokens):
            x = self.embed(tokens) + self.pos[:tokens.shape[1]]
            for block in self.blocks:
                x = block(x, self.causal_mask)
            return self.unembed(self.ln_f(x))

    return torch, Model


def _schedule(phase):
    """The phase's LR multiplier by step (`train.lr_multiplier`, in numpy), as a plain function for LambdaLR."""
    from fttrace.engine.train import lr_multiplier
    return lambda step: float(lr_multiplier(step, phase.warmup_steps, phase.steps, phase.schedule,
                                            phase.get("final_lr_fraction", 0.0), xp=np))


class TorchRunner:
    """`members` models trained one after another for `setup.steps` steps each, ready to time."""

    def __init__(self, setup, members: int):
        self.torch, self.Model = _modules()
        torch = self.torch
        self.setup, self.members = setup, members
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.bf16 = setup.model.dtype == "bfloat16"
        self.autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)
        self.fused = self.device.type == "cuda"  # one fused AdamW kernel per step, as a tuned GPU loop has it
        self._train(*self._build(0), min(setup.steps, 5))  # untimed: first-run allocations and kernel choices
        self.threads = _fastest_threads(torch, lambda: self._train(*self._build(0), min(setup.steps, 10)))
        self.peak_mb = 0.0

    def _build(self, member: int):
        torch, setup, phase = self.torch, self.setup, self.setup.phase
        torch.manual_seed(setup.seed * 100_003 + member)
        model = self.Model(setup.model).to(self.device)
        opt = torch.optim.AdamW(model.parameters(), lr=setup.lr, betas=(phase.b1, phase.b2), eps=1e-8,
                                weight_decay=phase.weight_decay, fused=self.fused)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(phase))
        rng = torch.Generator(device=self.device).manual_seed(setup.seed * 100_003 + member)
        return model, opt, schedule, rng

    def _train(self, model, opt, schedule, rng, steps: int) -> float:
        torch, setup = self.torch, self.setup
        for _ in range(steps):
            draws = torch.randint(0, setup.model.vocab_size, (setup.batch, setup.context + 1), generator=rng,
                                  device=self.device)
            loss = self.objective_loss(model, draws)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if setup.phase.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), setup.phase.grad_clip)
            opt.step()
            schedule.step()
        return loss.item()  # waits for the device

    def objective_loss(self, model, draws):
        """The objective's loss on `draws` [batch, context + 1]: the last token from the rest (answer), or every next
        token (lm)."""
        torch = self.torch
        with self.autocast:
            logits = model(draws[:, :-1])
        if self.setup.objective_name == "lm":
            return torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), draws[:, 1:].flatten())
        return torch.nn.functional.cross_entropy(logits[:, -1].float(), draws[:, -1])

    def run(self) -> float:
        """Seconds of training (building each model and optimiser is not timed, as the engine's init is not)."""
        seconds, cuda = 0.0, self.device.type == "cuda"
        for member in range(self.members):
            built = self._build(member)
            if cuda:
                self.torch.cuda.reset_peak_memory_stats()
            t0 = time.perf_counter()
            self.loss = self._train(*built, self.setup.steps)
            seconds += time.perf_counter() - t0
            if cuda:
                self.peak_mb = max(self.peak_mb, self.torch.cuda.max_memory_allocated() / 2**20)
        return seconds

    def finish(self) -> dict:
        cuda = self.device.type == "cuda"
        name = self.torch.cuda.get_device_name() if cuda else "cpu"
        return dict(compile_s=None, peak_mem_per_member_mb=self.peak_mb if cuda else None,
                    peak_mem_source="torch.cuda.max_memory_allocated" if cuda else "not tracked by torch on CPU",
                    device_peak_mb=None, device=f"torch-{self.device.type}:{name}", final_loss=self.loss,
                    torch_version=self.torch.__version__, torch_threads=self.threads,
                    torch_autocast_bf16=self.bf16,
                    torch_fused_adamw=self.fused)


def _fastest_threads(torch, trial) -> int:
    """Sets and returns the faster of torch's default intra-op thread count and 1, timing `trial` under each."""
    seconds = {}
    for threads in sorted({torch.get_num_threads(), 1}, reverse=True):
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        trial()
        seconds[threads] = time.perf_counter() - t0
    best = min(seconds, key=seconds.get)
    torch.set_num_threads(best)
    return best
