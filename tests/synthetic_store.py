"""Synthetic fttrace results stores with planted effects, in the exact schema of a real run (pandas/pyarrow only).

Every fine-tuned member loses C_PT in fine-tuning and is drawn as one of two kinds:
  wrapper    pruning `REVIVE_K` neurons brings C_PT back, probes read the pretraining target as well as in the
             parent, and reFT reaches the C_PT threshold at `WRAPPER_REFT_STEP`, long before the control
  rewritten  pruning does nothing (noise), the probe reads the target at `rewritten_probe_ratio` x the parent's,
             and reFT takes as long as the control (both drawn from one distribution)
with probability `wrapper_rate(lr_name, prior_name, spurious)` of being a wrapper. With `wrapper_rate=0` and
`rewritten_probe_ratio` equal to the probe threshold, no claim of the study holds: a null store.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

PRIORS = {"high": 0.2, "medium": 0.02, "low": 0.002}
LR_SCALE = {"small": 1e-3, "medium": 1e-2, "large": 1e-1}
PRETRAIN_LR = 1e-3
MODEL = dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256)
NEURON_KS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50)
HEAD_KS = (0, 1, 2, 3, 4)
MASK_KS = (5, 26)
WEIGHT_KS = (0, 10, 30, 100)
REVIVE_K = 5
TOLERANCE = 0.05
THRESHOLD = 0.95
PRETRAIN_STEPS, FINETUNE_STEPS, REFT_STEPS, REFT_EVERY = (0, 500, 1000), (0, 250, 500), 500, 50
WRAPPER_REFT_STEP = 50
CONTROL_FACTORS = (1.0, 10.0)
HYPER = ("group", "seed", "pretrain_lr", "prior", "prior_name", "finetune_lr", "finetune_lr_name", "spurious",
         "reft_lr", "control_lr_factor")
BASE = ("member", "parent", "phase", "step", "metric", "value", "status")


@dataclasses.dataclass
class Plant:
    seeds: int = 8
    priors: tuple = ("high", "low")
    lrs: tuple = ("medium", "large")
    spurious: tuple = (0.0, 1.0)
    wrapper_rate: Callable[[str, str, float], float] = lambda lr, prior, spurious: 0.0
    rewritten_probe_ratio: float = 0.5
    kept: Callable[[str, str, float], bool] = lambda lr, prior, spurious: False  # fine-tuning left C_PT intact
    noise: float = 0.02
    diverged: tuple = ()  # fine-tuned member ids marked diverged
    phases: tuple = ("pretrain", "finetune", "reft", "control_pretrain", "control_reft", "prune", "probe",
                     "attention")
    seed_offset: int = 0


def config_for(plant: Plant) -> dict:
    return {
        "seed": 0, "evals": ["reft", "prune", "probe", "attention"],
        "task": {"name": "counter", "priors": PRIORS, "pt_operand": 0, "ft_operand": 2},
        "model": dict(MODEL, activation="gelu"),
        "pretrain": {"steps": PRETRAIN_STEPS[-1], "eval_every": PRETRAIN_STEPS[1]},
        "finetune": {"steps": FINETUNE_STEPS[-1], "eval_every": FINETUNE_STEPS[1], "lr_scale": LR_SCALE},
        "reft": {"steps": REFT_STEPS, "eval_every": REFT_EVERY, "threshold": THRESHOLD, "lr_factor": 0.1,
                 "control_lr_factors": list(CONTROL_FACTORS)},
        "prune": {"tolerance": TOLERANCE, "neuron_ks": list(NEURON_KS), "head_ks": list(HEAD_KS)},
        "sweep": {"seeds": plant.seeds, "seed_offset": plant.seed_offset, "prior": list(plant.priors),
                  "finetune_lr": list(plant.lrs), "spurious": list(plant.spurious), "pretrain_lr": [PRETRAIN_LR]},
    }


def _rows(member: dict, phase: str, records: dict, status: str = "ok") -> list[dict]:
    """Long-format rows of one member: records {step: {metric: value}}."""
    info = {c: member.get(c) for c in HYPER}
    return [dict(member=member["member"], parent=member.get("parent"), phase=phase, step=int(step), metric=metric,
                 value=float(value), status=status, **info)
            for step, metrics in records.items() for metric, value in metrics.items()]


def _first_reaching(steps, curve, reference) -> float:
    hit = [s for s, v in zip(steps, curve) if v >= THRESHOLD * reference]
    return float(hit[0]) if hit else np.nan


def _k_revive(ks, curve, reference) -> float:
    hit = [k for k, v in zip(ks, curve) if v >= reference - TOLERANCE]
    return float(hit[0]) if hit else np.nan


class _Builder:
    def __init__(self, plant: Plant, seed: int):
        self.plant, self.rng, self.rows = plant, np.random.default_rng(seed), []

    def noisy(self, value, size=None):
        return np.clip(value + self.rng.normal(0, self.plant.noise, size), 0.0, 1.0)

    def add(self, member, phase, records, status="ok"):
        if phase in self.plant.phases:
            self.rows += _rows(member, phase, records, status)

    def training(self, member, phase, steps, start, end, status="ok"):
        """pt_acc/ft_acc curves from start to end (dicts by metric), with losses and divergence step."""
        records = {}
        for i, step in enumerate(steps):
            f = i / (len(steps) - 1)
            metrics = {m: self.noisy(start[m] + f * (end[m] - start[m])) for m in ("pt_acc", "ft_acc")}
            metrics.update(pt_loss=2 * (1 - metrics["pt_acc"]), ft_loss=2 * (1 - metrics["ft_acc"]),
                           train_loss=1.5 - f)
            records[step] = metrics
        records[steps[-1]]["diverged_step"] = 250.0 if status == "diverged" else -1.0
        self.add(member, phase, records, status)

    def reft_like(self, member, phase, start, reference, reach_step, status="ok"):
        steps = list(range(0, REFT_STEPS + 1, REFT_EVERY))
        curve = [reference if reach_step is not None and s >= reach_step else self.noisy(start) for s in steps]
        records = {s: {"pt_acc": v, "ft_acc": self.noisy(0.5), "pt_loss": 2 * (1 - v), "ft_loss": 1.0,
                       "train_loss": 2 * (1 - v)} for s, v in zip(steps, curve)}
        records[steps[-1]]["diverged_step"] = -1.0
        self.add(member, phase, records, status)
        first = _first_reaching(steps, curve, reference)
        self.add(member, phase, {0: {"steps_to_threshold": first, "reached": float(np.isfinite(first))}}, status)

    def probe(self, member, peak, prefix=""):
        shape = np.array([0.2, 0.7, 1.0])  # embeddings, block 1, block 2
        records = {}
        for layer, scale in enumerate(shape):
            metrics = {f"{prefix}resid.pt_acc": self.noisy(peak * scale), f"{prefix}resid.ft_acc": self.noisy(0.5),
                       f"{prefix}resid.shuffled_acc": self.noisy(0.1)}
            if layer > 0:
                metrics.update({f"{prefix}attn.pt_acc": self.noisy(peak * scale * 0.8),
                                f"{prefix}attn.ft_acc": self.noisy(0.4), f"{prefix}attn.shuffled_acc": self.noisy(0.1)})
            records[layer] = metrics
        return records

    def attention(self, member, pattern):
        records = {}
        for layer in range(MODEL["n_layers"]):
            records[layer] = {f"{q}.h{h}.{t}": self.noisy(pattern[layer, h, j])
                              for q in ("pt_query", "ft_query") for h in range(MODEL["n_heads"])
                              for j, t in enumerate(("operand", "pt_tokens", "ft_tokens"))}
        self.add(member, "attention", records)

    def prune(self, member, before, reference, revive_at):
        """Pruning curves and summary rows; C_PT jumps to `reference` from k = revive_at (None: never)."""
        units = {"neurons": MODEL["n_layers"] * MODEL["d_mlp"], "heads": MODEL["n_layers"] * MODEL["n_heads"],
                 "neurons_remove_ft": MODEL["n_layers"] * MODEL["d_mlp"], "mask": MODEL["n_layers"] * MODEL["d_mlp"],
                 "weights": 100_000}
        ks = {"neurons": NEURON_KS, "heads": HEAD_KS, "neurons_remove_ft": NEURON_KS, "mask": MASK_KS,
              "weights": WEIGHT_KS}
        records = {}
        for method, method_ks in ks.items():
            revives = revive_at is not None and method in ("neurons", "mask")
            curve = [reference - 0.01 if revives and k >= revive_at else self.noisy(before) if k else before
                     for k in method_ks]
            for k, v in zip(method_ks, curve):
                records.setdefault(k, {}).update({f"{method}.pt_acc": v, f"{method}.ft_acc": self.noisy(0.5)})
            k_revive = _k_revive(method_ks, curve, reference)
            records.setdefault(0, {}).update({f"{method}.k_revive": k_revive,
                                              f"{method}.frac_revive": k_revive / units[method]})
        self.add(member, "prune", records)


def build_frame(plant: Plant = Plant(), seed: int = 0) -> pd.DataFrame:
    b = _Builder(plant, seed)
    pts, n_ft = [], 0
    for s in range(plant.seed_offset, plant.seed_offset + plant.seeds):
        for prior in plant.priors:
            pts.append(dict(member=f"pt{len(pts)}", parent=None, group=0, seed=s, pretrain_lr=PRETRAIN_LR,
                            prior=PRIORS[prior], prior_name=prior))
    first_of_seed = {}
    for pt in pts:
        first_of_seed.setdefault(pt["seed"], pt)
        pt_acc = float(b.noisy(0.95))
        pt["pt_acc"] = pt_acc
        b.training(pt, "pretrain", PRETRAIN_STEPS, {"pt_acc": 0.1, "ft_acc": 0.1}, {"pt_acc": pt_acc, "ft_acc": 0.3})
        pt_probe = float(b.noisy(0.9))
        pt_pattern = b.rng.uniform(0, 1, (MODEL["n_layers"], MODEL["n_heads"], 3))
        pt["pattern"] = pt_pattern
        init = b.probe(pt, 0.5, "init_")
        b.add(pt, "probe", {layer: {**metrics, **init[layer]} for layer, metrics in b.probe(pt, pt_probe).items()})
        b.attention(pt, pt_pattern)
        b.prune(pt, pt_acc, pt_acc, 0)
        pt["probe"] = pt_probe
    for pt in pts:
        for lr in plant.lrs:
            for spurious in plant.spurious:
                ft = dict({k: pt[k] for k in ("group", "seed", "pretrain_lr", "prior", "prior_name")},
                          member=f"ft{n_ft}", parent=pt["member"], finetune_lr=PRETRAIN_LR * LR_SCALE[lr],
                          finetune_lr_name=lr, spurious=float(spurious))
                n_ft += 1
                wrapper = b.rng.uniform() < plant.wrapper_rate(lr, pt["prior_name"], spurious)
                status = "diverged" if ft["member"] in plant.diverged else "ok"
                kept = plant.kept(lr, pt["prior_name"], spurious)
                lost = pt["pt_acc"] if kept else float(b.noisy(0.1))
                b.training(ft, "finetune", FINETUNE_STEPS, {"pt_acc": pt["pt_acc"], "ft_acc": 0.3},
                           {"pt_acc": lost, "ft_acc": 0.9}, status)
                ratio = 1.0 if wrapper else plant.rewritten_probe_ratio
                b.add(ft, "probe", b.probe(ft, pt["probe"] * ratio))
                b.attention(ft, pt["pattern"] if wrapper else b.rng.uniform(0, 1, pt["pattern"].shape))
                b.prune(ft, lost, pt["pt_acc"], REVIVE_K if wrapper else None)
                rft = dict(ft, member="r" + ft["member"], parent=ft["member"], reft_lr=ft["finetune_lr"] * 0.1)
                b.reft_like(rft, "reft", lost, pt["pt_acc"],
                            0 if kept else WRAPPER_REFT_STEP if wrapper else _slow_step(b.rng))
                b.add(rft, "probe", b.probe(rft, pt["probe"]))
                b.attention(rft, pt["pattern"])
    for s, pt in first_of_seed.items():
        cpt = dict({k: pt[k] for k in ("group", "seed", "pretrain_lr")}, member="c" + pt["member"], parent=None,
                   prior=1.0, prior_name="control")
        b.training(cpt, "control_pretrain", PRETRAIN_STEPS, {"pt_acc": 0.1, "ft_acc": 0.1},
                   {"pt_acc": 0.1, "ft_acc": 0.9})
        reference = np.mean([p["pt_acc"] for p in pts if p["seed"] == s])
        for lr in plant.lrs:
            for factor in CONTROL_FACTORS:
                control = dict(cpt, member=f"{cpt['member']}-{lr}-x{factor:g}", parent=cpt["member"],
                               finetune_lr=PRETRAIN_LR * LR_SCALE[lr], finetune_lr_name=lr,
                               reft_lr=PRETRAIN_LR * LR_SCALE[lr] * 0.1 * factor, control_lr_factor=factor)
                b.reft_like(control, "control_reft", 0.1, reference, _slow_step(b.rng))
    frame = pd.DataFrame(b.rows, columns=[*BASE, *HYPER])
    for column in ("parent", "prior_name", "finetune_lr_name"):
        frame[column] = frame[column].astype(object)
    return frame


def _slow_step(rng):
    """A revival step of the control (or of a rewritten member): late, or never within the budget."""
    step = int(rng.choice([150, 200, 250, 300, 350, 400, 450, 500, 10_000]))
    return step if step <= REFT_STEPS else None


def write_store(path, plant: Plant = Plant(), seed: int = 0, frame: pd.DataFrame | None = None,
                status: str = "complete", shard=None, config: dict | None = None) -> Path:
    """A workdir holding results.parquet and manifest.json; returns its path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    frame = build_frame(plant, seed) if frame is None else frame
    frame.to_parquet(path / "results.parquet", index=False)
    manifest = dict(config=config or config_for(plant), versions={"fttrace": "0.1.0"}, devices=["cpu:0"],
                    git_commit=None, wall_s=1.0, status=status, shard=list(shard) if shard else None)
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path
