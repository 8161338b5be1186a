"""Synthetic fttrace results stores with planted taxonomy classes, in the schema the engine writes (pandas/pyarrow
only): training phases with stop steps, regime diagnostics (with the untrained models and the task rows), probes
with the control target, pruning with the random-neuron null, attention with tv_parent / tv_seed, patching, reFT and
the control that never had C_PT (pretrained without it, then trained on C_PT at the matched reFT LR x 1 and x 10).

Every fine-tuned member is planted as one class, `Plant.kind(lr, prior, spurious)` (a name, or {name: probability}):
  no-op         fine-tuning never met its criterion (stop_step -1); C_FT stays at the operand-blind level
  untouched     the parent already met the criterion: stop_step 0, the member is its parent (plant it where the
                pretrained C_FT reaches the target: the high prior)
  reuse         C_PT intact, C_FT only through the shortcut (C_Te = 1), operand-blind at C_Te = 0
  kept          C_PT intact beside a learnt C_FT
  wrapper       C_PT suppressed; pruning REVIVE_K neurons brings it back, reFT reaches it at WRAPPER_REFT_STEP
  pruning-only  suppressed; pruning revives it, reFT never reaches the threshold
  reft-only     suppressed; reFT revives it at WRAPPER_REFT_STEP, pruning does nothing
  overwrite     suppressed; neither revives it
"wrapper", "pruning-only" and "reft-only" are the taxonomy's hidden wrapper. Probes keep the parent's selectivity
except in an overwrite, whose probes read what the control that never had C_PT reads (PROBE_NEVER_HAD). With
`null_like`, an overwrite's pruning and reFT are drawn like the nulls (random neurons, the control), so that any claim
about them is false.

With `planted`, every lineage of the lowest prior also gets its members of known answer (evaluation "planted"): a
null twin `nftN` (phase null_finetune, the seed's control fine-tuned: C_PT stays at the control's, C_FT learnt;
its pruning gains drawn like random pruning, its reFT child's steps like the control's) and a planted wrapper
`wftN` (phase planted_wrapper: C_PT suppressed, pruning REVIVE_K neurons brings it back, its reFT child reaches it
at WRAPPER_REFT_STEP).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

PRIORS = {"high": 0.2, "medium": 0.02, "low": 0.002}
LR_SCALE = {"small": 1e-3, "medium": 1e-2, "large": 1e-1, "huge": 1.0}
PRETRAIN_LR = 1e-3
MODEL = dict(d_model=64, n_layers=2, n_heads=4, d_mlp=256)
NEURON_KS = (0, 1, 2, 3, 5, 8, 10, 15, 20, 30, 50)
HEAD_KS = (0, 1, 2, 3, 4)
MASK_KS = (0, 5, 26)
WEIGHT_KS = (0, 10, 30, 100)
REVIVE_K = 5
TOLERANCE = 0.05
THRESHOLD = 0.95
TARGET = 0.9
PRETRAIN_STEPS, FINETUNE_STEPS, REFT_STEPS, REFT_EVERY = (0, 500, 1000), (0, 250, 500), 500, 50
STOP_STEP = 250
WRAPPER_REFT_STEP = 50
REFT_LR_SCALE, REFT_LR_FACTOR = 0.1, 0.1
CONTROL_FACTORS = (1.0, 10.0)
# The control's steps to the threshold per seed (seed % 8; None: not within the budget), at LR factor 1 and 10.
CONTROL_STEPS = {1.0: (150, 300, 200, 450, 250, None, 350, 500), 10.0: (100, 150, 100, 200, 150, 300, 150, 250)}
PT_ACC, LACKING_PT_ACC, SUPPRESSED_PT_ACC, CONTROL_PT_ACC, INIT_ACC = 0.95, 0.2, 0.1, 0.1, 0.05
BLIND, MAJORITY = 0.3, 0.4
PRETRAINED_FT = {"high": 0.92, "medium": 0.6, "low": BLIND + 0.02}
PROBE_PEAK, PROBE_NEVER_HAD, PROBE_CONTROL_TARGET = 0.95, 0.35, 0.25
TV_SEED, TV_KEPT, TV_OVERWRITE = 0.3, 0.05, 0.45
CLASSES = ("no-op", "untouched", "reuse", "kept", "wrapper", "pruning-only", "reft-only", "overwrite")
SUPPRESSED = ("wrapper", "pruning-only", "reft-only", "overwrite")
HYPER = ("group", "seed", "pretrain_lr", "prior", "prior_name", "finetune_lr", "finetune_lr_name", "spurious",
         "reft_lr", "reft_lr_base", "control_lr_factor")
BASE = ("member", "parent", "phase", "step", "metric", "value", "status")
ALL_PHASES = ("pretrain", "finetune", "reft", "control_pretrain", "control_reft", "regime", "prune", "probe",
              "attention", "patch", "null_finetune", "null_reft", "planted_wrapper", "wrapper_reft")


@dataclasses.dataclass
class Plant:
    seeds: int = 8
    priors: tuple = ("high", "low")
    lrs: tuple = ("medium", "large")
    spurious: tuple = (0.0, 1.0)
    kind: Callable[[str, str, float], object] = lambda lr, prior, spurious: "overwrite"
    noise: float = 0.02
    diverged: tuple = ()  # fine-tuned member ids marked diverged
    phases: tuple = ALL_PHASES
    seed_offset: int = 0
    target: float = TARGET  # finetune.target (0: no criterion; every stop_step is then -1)
    lacking: tuple = ()  # priors whose pretrained models lack C_PT
    prior_contrast: bool = True  # pretrained C_FT high at the high prior, operand-blind at the low one
    missed: tuple = ()  # (seed, prior) pairs whose pretraining missed C_FT: operand-blind at any prior
    null_like: bool = False  # an overwrite's pruning and reFT drawn like the nulls
    reft_lr_mode: str = "shared"  # "tied": reFT LR = fine-tuning LR x REFT_LR_FACTOR
    d_models: tuple = (MODEL["d_model"],)  # more than one: a swept scale column (one group each)
    tv_seed: float = TV_SEED  # the seed-to-seed attention null (0: every pretrained member the same model)
    planted: bool = False  # members of known answer for the lowest prior's lineages (module docstring)


def config_for(plant: Plant) -> dict:
    return {
        "seed": 0, "evals": ["reft", "prune", "probe", "attention", "patch"],
        "task": {"name": "counter", "priors": PRIORS, "pt_operand": 0, "ft_operand": 2, "holdout": 0.1},
        "model": dict(MODEL, activation="gelu"),
        "pretrain": {"steps": PRETRAIN_STEPS[-1], "eval_every": PRETRAIN_STEPS[1]},
        "finetune": {"steps": FINETUNE_STEPS[-1], "eval_every": FINETUNE_STEPS[1], "lr_scale": LR_SCALE,
                     "target": plant.target},
        "reft": {"steps": REFT_STEPS, "eval_every": REFT_EVERY, "threshold": THRESHOLD, "lr_mode": plant.reft_lr_mode,
                 "lr_scale": REFT_LR_SCALE, "lr_factor": REFT_LR_FACTOR, "control_lr_factors": list(CONTROL_FACTORS)},
        "prune": {"tolerance": TOLERANCE, "neuron_ks": list(NEURON_KS), "head_ks": list(HEAD_KS), "random_draws": 8},
        "sweep": {"seeds": plant.seeds, "seed_offset": plant.seed_offset, "prior": list(plant.priors),
                  "finetune_lr": list(plant.lrs), "spurious": list(plant.spurious), "pretrain_lr": [PRETRAIN_LR]},
    }


def _first_reaching(steps, curve, reference) -> float:
    hit = [s for s, v in zip(steps, curve) if v >= THRESHOLD * reference]
    return float(hit[0]) if hit else np.nan


def _k_revive(ks, curve, reference) -> float:
    hit = [k for k, v in zip(ks, curve) if v >= reference - TOLERANCE]
    return float(hit[0]) if hit else np.nan


@dataclasses.dataclass
class Outcome:
    """What fine-tuning left in one member (test accuracies, output shares, stop step and the instruments)."""
    pt: float
    ft: float
    shortcut: float
    ft_share: float
    pt_share: float
    stop: float
    prune_revives: bool
    reft_step: object  # int, None (never) or "null" (drawn like the control)
    probe_peak: float
    tv: float


class _Builder:
    def __init__(self, plant: Plant, seed: int):
        self.plant, self.rng, self.rows = plant, np.random.default_rng(seed), []
        self.scale = "d_model" if len(plant.d_models) > 1 else None

    def noisy(self, value, size=None):
        return np.clip(value + self.rng.normal(0, self.plant.noise, size), 0.0, 1.0)

    def add(self, member, phase, records, status="ok"):
        """Long-format rows of one member: records {step: {metric: value}}."""
        if phase not in self.plant.phases:
            return
        info = {c: member.get(c) for c in HYPER}
        if self.scale:
            info[self.scale] = member[self.scale]
        self.rows += [dict(member=member["member"], parent=member.get("parent"), phase=phase, step=int(step),
                           metric=metric, value=float(value), status=status, **info)
                      for step, metrics in records.items() for metric, value in metrics.items()]

    def training(self, member, phase, steps, start, end, stop=-1.0, status="ok"):
        """pt_acc / ft_acc / ft_shortcut_acc curves from start to end, losses, and the last step's summary rows."""
        records = {}
        for i, step in enumerate(steps):
            f = i / (len(steps) - 1)
            metrics = {m: self.noisy(start[m] + f * (end[m] - start[m]))
                       for m in ("pt_acc", "ft_acc", "ft_shortcut_acc")}
            metrics.update(pt_loss=2 * (1 - metrics["pt_acc"]), ft_loss=2 * (1 - metrics["ft_acc"]),
                           ft_shortcut_loss=2 * (1 - metrics["ft_shortcut_acc"]), train_loss=1.5 - f)
            records[step] = metrics
        records[steps[-1]].update(diverged_step=250.0 if status == "diverged" else -1.0, stop_step=stop)
        self.add(member, phase, records, status)

    def regime(self, member, pt, ft, shortcut, ft_share, pt_share, extra=None, prefix=""):
        metrics = {f"{prefix}test.pt_acc": self.noisy(pt), f"{prefix}test.ft_acc": self.noisy(ft),
                   f"{prefix}test.ft_shortcut_acc": self.noisy(shortcut)}
        for query, (f_share, p_share) in (("ft_query", (ft_share, pt_share)), ("pt_query", (pt_share, ft_share))):
            majority = 0.5 * (1 - f_share - p_share)
            metrics.update({f"{prefix}{query}.ft_share": f_share, f"{prefix}{query}.pt_share": p_share,
                            f"{prefix}{query}.majority_share": majority,
                            f"{prefix}{query}.other_share": 1 - f_share - p_share - majority})
        return {**metrics, **(extra or {})}

    def reft_like(self, member, phase, start, reference, reach_step, status="ok"):
        steps = list(range(0, REFT_STEPS + 1, REFT_EVERY))
        curve = [reference if reach_step is not None and s >= reach_step else self.noisy(start) for s in steps]
        records = {s: {"pt_acc": v, "ft_acc": self.noisy(0.5), "ft_shortcut_acc": self.noisy(0.5),
                       "pt_loss": 2 * (1 - v), "ft_loss": 1.0, "ft_shortcut_loss": 1.0, "train_loss": 2 * (1 - v)}
                   for s, v in zip(steps, curve)}
        records[steps[-1]].update(diverged_step=-1.0, stop_step=-1.0)
        first = _first_reaching(steps, curve, reference)
        records[0].update(steps_to_threshold=first, reached=float(np.isfinite(first)))
        self.add(member, phase, records, status)
        return curve[-1]

    def probe(self, peak, prefix="", control=PROBE_CONTROL_TARGET):
        shape = np.array([0.4, 0.8, 1.0])  # embeddings, block 1, block 2
        records = {}
        for layer, scale in enumerate(shape):
            metrics = {f"{prefix}resid.pt_acc": self.noisy(peak * scale), f"{prefix}resid.ft_acc": self.noisy(0.5),
                       f"{prefix}resid.control_acc": self.noisy(control)}
            if layer > 0:
                metrics.update({f"{prefix}attn.pt_acc": self.noisy(peak * scale * 0.8),
                                f"{prefix}attn.ft_acc": self.noisy(0.4),
                                f"{prefix}attn.control_acc": self.noisy(control)})
            records[layer] = metrics
        return records

    def attention(self, member, pattern, tv_name=None, tv=np.nan):
        records = {}
        for layer in range(MODEL["n_layers"]):
            metrics = {}
            for q in ("pt_query", "ft_query"):
                for h in range(MODEL["n_heads"]):
                    for j, t in enumerate(("operand", "pt_tokens", "ft_tokens")):
                        metrics[f"{q}.h{h}.{t}"] = self.noisy(pattern[layer, h, j])
                    if tv_name:
                        metrics[f"{q}.h{h}.{tv_name}"] = np.nan if np.isnan(tv) else self.noisy(tv)
            records[layer] = metrics
        self.add(member, "attention", records)

    def prune(self, member, before, ft_before, reference, revives, null_like=False):
        """Pruning curves and summary rows. `revives`: C_PT jumps to the reference from k = REVIVE_K (targeted
        neuron methods) while C_FT falls; otherwise targeted pruning lowers C_PT slightly (or, null_like, moves it
        like random pruning does). Random neurons never revive anything."""
        units = {"neurons": MODEL["n_layers"] * MODEL["d_mlp"], "heads": MODEL["n_layers"] * MODEL["n_heads"],
                 "neurons_remove_ft": MODEL["n_layers"] * MODEL["d_mlp"], "mask": MODEL["n_layers"] * MODEL["d_mlp"],
                 "neurons_random": MODEL["n_layers"] * MODEL["d_mlp"], "weights": 100_000}
        ks = {"neurons": NEURON_KS, "heads": HEAD_KS, "neurons_remove_ft": NEURON_KS, "mask": MASK_KS,
              "neurons_random": NEURON_KS, "weights": WEIGHT_KS}
        records = {}
        for method, method_ks in ks.items():
            targeted = method in ("neurons", "mask")
            pt_curve, ft_curve = [], []
            for k in method_ks:
                if k == 0:
                    pt, ft = before, ft_before
                elif targeted and revives and k >= REVIVE_K:
                    pt, ft = reference - 0.01, 0.35
                elif method == "neurons_random" or null_like:
                    pt, ft = self.noisy(before), self.noisy(ft_before)
                else:
                    pt, ft = before - 0.01, ft_before - 0.01
                pt_curve.append(pt)
                ft_curve.append(ft)
            for k, pt, ft in zip(method_ks, pt_curve, ft_curve):
                records.setdefault(k, {}).update({f"{method}.pt_acc": pt, f"{method}.ft_acc": ft})
            k_revive = _k_revive(method_ks, pt_curve, reference)
            records.setdefault(0, {}).update({f"{method}.k_revive": k_revive,
                                              f"{method}.frac_revive": k_revive / units[method]})
        self.add(member, "prune", records)

    def patch(self, member, outcome: Outcome, reference):
        records = {"none.pt_acc": outcome.pt, "none.ft_acc": outcome.ft}
        sites = [f"L{layer}.{part}" for layer in range(MODEL["n_layers"])
                 for part in [*(f"h{h}" for h in range(MODEL["n_heads"])), "mlp", "block"]]
        for site in sites:
            located = site == "L1.mlp" and outcome.prune_revives
            records[f"{site}.pt_acc"] = reference if located else self.noisy(outcome.pt)
            records[f"{site}.ft_acc"] = 0.35 if located else self.noisy(outcome.ft)
        self.add(member, "patch", {0: records})


def outcome(kind: str, plant: Plant, parent_pt: float, parent_ft: float) -> Outcome:
    stop = -1.0 if plant.target == 0 else float(STOP_STEP)
    if kind == "no-op":
        ft = min(parent_ft, BLIND + 0.02)
        return Outcome(parent_pt, ft, ft + 0.03, 0.05, 0.9, -1.0, False, 0, PROBE_PEAK, TV_KEPT)
    if kind == "untouched":
        return Outcome(parent_pt, parent_ft, parent_ft, 0.9, 0.05, 0.0, False, 0, PROBE_PEAK, 0.0)
    if kind == "reuse":
        return Outcome(parent_pt, BLIND, 0.97, 0.05, 0.9, stop, False, 0, PROBE_PEAK, TV_KEPT)
    if kind == "kept":
        return Outcome(parent_pt, 0.95, 0.96, 0.9, 0.05, stop, False, 0, PROBE_PEAK, TV_KEPT)
    if kind not in SUPPRESSED:
        raise ValueError(f"unknown planted class {kind!r}")
    never = "null" if plant.null_like and kind == "overwrite" else None
    reft_step = WRAPPER_REFT_STEP if kind in ("wrapper", "reft-only") else never
    peak = PROBE_NEVER_HAD if kind == "overwrite" else PROBE_PEAK
    tv = TV_OVERWRITE if kind == "overwrite" else TV_KEPT
    return Outcome(SUPPRESSED_PT_ACC, 0.95, 0.96, 0.9, 0.03, stop, kind in ("wrapper", "pruning-only"), reft_step,
                   peak, tv)


def _slow_step(rng):
    """A revival step like the control's: late, or never within the budget."""
    step = int(rng.choice([150, 200, 250, 300, 350, 400, 450, 500, 10_000]))
    return step if step <= REFT_STEPS else None


def _choose(b: _Builder, planted) -> str:
    if isinstance(planted, str):
        return planted
    names, weights = zip(*planted.items())
    return str(b.rng.choice(names, p=np.asarray(weights, float) / sum(weights)))


def build_frame(plant: Plant = Plant(), seed: int = 0) -> pd.DataFrame:
    b = _Builder(plant, seed)
    pts, n_ft = [], 0
    for group, d_model in enumerate(plant.d_models):
        for s in range(plant.seed_offset, plant.seed_offset + plant.seeds):
            for prior in plant.priors:
                pts.append(dict(member=f"pt{len(pts)}", parent=None, group=group, seed=s, pretrain_lr=PRETRAIN_LR,
                                prior=PRIORS[prior], prior_name=prior, d_model=d_model))
    seeds_per_prior, first = {}, {}
    for pt in pts:
        pt["first"] = first.setdefault((pt["group"], pt["seed"], pt["pretrain_lr"]), pt["member"])
        seeds_per_prior.setdefault((pt["group"], pt["prior_name"]), []).append(pt["seed"])
    task = {"test.blind_acc": BLIND, "test.majority_acc": MAJORITY, "test.discriminating": 0.7,
            "heldout.fraction": 0.1, "heldout.eval_share": 1.0, "heldout.train_share": 0.0,
            "test.eval_overlap": 0.0, "test.distinct_share": 0.96}
    for pt in pts:
        pt_acc = float(b.noisy(LACKING_PT_ACC if pt["prior_name"] in plant.lacking else PT_ACC))
        contrast = plant.prior_contrast and (pt["seed"], pt["prior_name"]) not in plant.missed
        ft_acc = PRETRAINED_FT[pt["prior_name"]] if contrast else PRETRAINED_FT["low"]
        ft_share = 0.9 if ft_acc > 0.8 else 0.05
        pt.update(pt_acc=pt_acc, ft_acc=ft_acc)
        b.training(pt, "pretrain", PRETRAIN_STEPS, {"pt_acc": 0.1, "ft_acc": 0.1, "ft_shortcut_acc": 0.1},
                   {"pt_acc": pt_acc, "ft_acc": ft_acc, "ft_shortcut_acc": ft_acc})
        init = b.regime(pt, INIT_ACC, INIT_ACC, INIT_ACC, 0.0, 0.0, prefix="init_")
        b.add(pt, "regime", {0: {**b.regime(pt, pt_acc, ft_acc, ft_acc, ft_share, 1 - ft_share - 0.05, task), **init}})
        init_probe = b.probe(0.28, "init_", control=0.27)
        b.add(pt, "probe", {layer: {**metrics, **init_probe[layer]} for layer, metrics in b.probe(PROBE_PEAK).items()})
        pattern = b.rng.uniform(0, 1, (MODEL["n_layers"], MODEL["n_heads"], 3))
        pt["pattern"] = pattern
        one_seed = len(set(seeds_per_prior[(pt["group"], pt["prior_name"])])) < 2
        b.attention(pt, pattern, "tv_seed", np.nan if one_seed else plant.tv_seed)
        b.prune(pt, pt_acc, ft_acc, pt_acc, False)
    lineages = []
    for pt in pts:
        for lr in plant.lrs:
            for spurious in plant.spurious:
                ft = dict({k: pt[k] for k in ("group", "seed", "pretrain_lr", "prior", "prior_name", "d_model")},
                          member=f"ft{n_ft}", parent=pt["member"], finetune_lr=PRETRAIN_LR * LR_SCALE[lr],
                          finetune_lr_name=lr, spurious=float(spurious))
                n_ft += 1
                kind = _choose(b, plant.kind(lr, pt["prior_name"], spurious))
                o = outcome(kind, plant, pt["pt_acc"], pt["ft_acc"])
                status = "diverged" if ft["member"] in plant.diverged else "ok"
                b.training(ft, "finetune", FINETUNE_STEPS,
                           {"pt_acc": pt["pt_acc"], "ft_acc": pt["ft_acc"], "ft_shortcut_acc": pt["ft_acc"]},
                           {"pt_acc": o.pt, "ft_acc": o.ft, "ft_shortcut_acc": o.shortcut}, o.stop, status)
                b.add(ft, "regime", {0: b.regime(ft, o.pt, o.ft, o.shortcut, o.ft_share, o.pt_share)}, status)
                b.add(ft, "probe", b.probe(o.probe_peak))
                b.attention(ft, pt["pattern"], "tv_parent", o.tv)
                b.prune(ft, o.pt, o.ft, pt["pt_acc"], o.prune_revives, null_like=o.reft_step == "null")
                b.patch(ft, o, pt["pt_acc"])
                scale = REFT_LR_SCALE * PRETRAIN_LR if plant.reft_lr_mode == "shared" else \
                    REFT_LR_FACTOR * ft["finetune_lr"]
                rft = dict(ft, member="r" + ft["member"], parent=ft["member"], reft_lr=scale)
                step = _slow_step(b.rng) if o.reft_step == "null" else o.reft_step
                end = b.reft_like(rft, "reft", o.pt, pt["pt_acc"], step)
                b.add(rft, "regime", {0: b.regime(rft, end, 0.5, 0.5, 0.1, 0.8)})
                b.add(rft, "probe", b.probe(PROBE_PEAK))
                b.attention(rft, pt["pattern"], "tv_parent", TV_KEPT)
                lineages.append((pt, rft))
                if plant.planted and pt["prior_name"] == plant.priors[-1]:
                    _planted(b, plant, pt, ft, scale)
    _controls(b, plant, pts, lineages)
    columns = [*BASE, *HYPER, *([b.scale] if b.scale else [])]
    frame = pd.DataFrame(b.rows, columns=columns)
    for column in ("parent", "prior_name", "finetune_lr_name"):
        frame[column] = frame[column].astype(object)
    return frame


def _planted(b: _Builder, plant: Plant, pt, ft, reft_lr) -> None:
    """The null twin and the planted wrapper of one real member `ft` (module docstring)."""
    stop = -1.0 if plant.target == 0 else float(STOP_STEP)
    start = {"pt_acc": CONTROL_PT_ACC, "ft_acc": 0.9, "ft_shortcut_acc": 0.9}
    null = dict(ft, member="n" + ft["member"], parent="c" + pt["first"], prior_name="control")
    wrapper = dict(ft, member="w" + ft["member"])
    for member, phase, before, o in (
            (null, "null_finetune", start, Outcome(CONTROL_PT_ACC, 0.95, 0.96, 0.9, 0.03, stop, False, "null",
                                                   PROBE_NEVER_HAD, TV_OVERWRITE)),
            (wrapper, "planted_wrapper", {"pt_acc": pt["pt_acc"], "ft_acc": pt["ft_acc"],
                                          "ft_shortcut_acc": pt["ft_acc"]}, outcome("wrapper", plant, pt["pt_acc"],
                                                                                    pt["ft_acc"]))):
        b.training(member, phase, FINETUNE_STEPS, before, {"pt_acc": o.pt, "ft_acc": o.ft,
                                                           "ft_shortcut_acc": o.shortcut}, o.stop)
        b.add(member, "regime", {0: b.regime(member, o.pt, o.ft, o.shortcut, o.ft_share, o.pt_share)})
        b.add(member, "probe", b.probe(o.probe_peak))
        b.prune(member, o.pt, o.ft, pt["pt_acc"], o.prune_revives, null_like=o.reft_step == "null")
        child = dict(member, member="r" + member["member"], parent=member["member"], reft_lr=reft_lr)
        step = _slow_step(b.rng) if o.reft_step == "null" else o.reft_step
        b.reft_like(child, "null_reft" if member is null else "wrapper_reft", o.pt, pt["pt_acc"], step)


def _controls(b: _Builder, plant: Plant, pts, lineages) -> None:
    """One control per (group, seed, pretraining LR), pretrained without C_PT, then trained on C_PT at each reFT LR
    of its seed x CONTROL_FACTORS."""
    first = {}
    for pt in pts:
        first.setdefault((pt["group"], pt["seed"], pt["pretrain_lr"]), pt)
    for (group, seed, pretrain_lr), pt in first.items():
        cpt = dict(group=group, seed=seed, pretrain_lr=pretrain_lr, member="c" + pt["member"], parent=None, prior=1.0,
                   prior_name="control", d_model=pt["d_model"])
        b.training(cpt, "control_pretrain", PRETRAIN_STEPS, {"pt_acc": 0.1, "ft_acc": 0.1, "ft_shortcut_acc": 0.1},
                   {"pt_acc": CONTROL_PT_ACC, "ft_acc": 0.9, "ft_shortcut_acc": 0.9})
        b.add(cpt, "regime", {0: b.regime(cpt, CONTROL_PT_ACC, 0.9, 0.9, 0.9, 0.05)})
        b.add(cpt, "probe", b.probe(PROBE_NEVER_HAD))
        b.prune(cpt, CONTROL_PT_ACC, 0.9, PT_ACC, False, null_like=True)
        mine = [(p, r) for p, r in lineages if (p["group"], p["seed"], p["pretrain_lr"]) == (group, seed, pretrain_lr)]
        reference = np.mean([p["pt_acc"] for p, _ in mine]) if mine else PT_ACC
        for base in sorted({r["reft_lr"] for _, r in mine}):
            for factor in CONTROL_FACTORS:
                control = dict(cpt, member=f"{cpt['member']}-{base:g}-x{factor:g}", parent=cpt["member"],
                               reft_lr=base * factor, reft_lr_base=base, control_lr_factor=factor)
                step = _slow_step(b.rng) if plant.null_like else CONTROL_STEPS[factor][seed % 8]
                end = b.reft_like(control, "control_reft", CONTROL_PT_ACC, reference, step)
                b.add(control, "regime", {0: b.regime(control, end, 0.9, 0.9, 0.9, 0.05)})
                b.add(control, "probe", b.probe(0.9))


def write_store(path, plant: Plant = Plant(), seed: int = 0, frame: pd.DataFrame | None = None,
                status: str = "complete", shard=None, config: dict | None = None, task: dict | None = None) -> Path:
    """A workdir holding results.parquet and manifest.json (with `task`, what fttrace records of the task);
    returns its path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    frame = build_frame(plant, seed) if frame is None else frame
    frame.to_parquet(path / "results.parquet", index=False)
    manifest = dict(config=config or config_for(plant), versions={"fttrace": "0.2.0"}, devices=["cpu:0"],
                    git_commit=None, wall_s=1.0, status=status, shard=list(shard) if shard else None,
                    **({"task": task} if task is not None else {}))
    (path / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return path


LOG_STEPS = (0, 1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 1500)


def log_spaced_reft(frame: pd.DataFrame, steps=LOG_STEPS) -> pd.DataFrame:
    """`frame` with its reFT and control C_PT curves logged at `steps` (log-spaced early, as the engine logs reFT),
    each member's curve its first logged value until its steps_to_threshold and its last one from there on."""
    phases = frame.phase.isin(["reft", "control_reft"])
    curves = frame[phases & (frame.metric == "pt_acc")]
    summary = frame[phases & (frame.metric == "steps_to_threshold")].set_index("member").value
    rows = []
    for member, curve in curves.groupby("member", sort=False):
        curve = curve.sort_values("step")
        first, last, reach = curve.iloc[0], curve.value.iloc[-1], summary.get(member, np.nan)
        for step in steps:
            value = last if np.isfinite(reach) and step >= reach else first.value
            rows.append(first.to_dict() | {"step": step, "value": value})
    return pd.concat([frame[~(phases & (frame.metric == "pt_acc"))], pd.DataFrame(rows, columns=frame.columns)],
                     ignore_index=True)
