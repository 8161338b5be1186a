"""The sweep grid: groups (same static shapes) of members (same program, per-member hyperparameters).

Axes that change array shapes or loop lengths (`sweep.shapes.*`: model fields, and `pretrain_steps`, the pretraining
budget) split the grid into groups. Inside a group,
pretraining members are seeds x pretraining LRs x sampling priors; each feeds one fine-tuning member per
(fine-tuning LR x spurious strength) — the fan-out, a gather along the member axis by `parent_index`.

Member ids are stable strings numbered across the whole grid (`pt0`, `pt1`, ..., `ft0`, ...), so results of
separate groups, shards or resumed runs join without renumbering. Numbers go seed by seed (a seed's members of every
group, then the next seed's), counted from seed 0: a member's id depends on its seed and cell only, so a sweep grown
by more seeds in another workdir (`sweep.seed_offset`) names its members as one sweep of all the seeds would, and
never reuses an id. `shard_groups` deals the grid's lineages (a
pretraining member and its fine-tuning children) to independent runs (`fttrace run --shard i/N`).

`sweep.finetune_priors` restricts the fan-out to the pretraining members of those priors: the others (say the high
prior, whose pretraining already teaches C_FT, so its fine-tuning would stop at step 0) are pretrained and measured
only, for the regime's check.

Named values resolve to numbers here: priors through `task.priors`, fine-tuning LRs through `finetune.lr_scale`
(relative to the member's pretraining LR); both keep their name in a `*_name` column.

With `sweep.protocol` (fttrace/engine/protocols.py) every pretraining member also feeds one fine-tuning member per
protocol (x LR x spurious strength); all protocols share the group, and the members carry the protocol columns.

`sweep.finetune_optimizer` ({name: values} of train.OPTIMIZER_AXES: weight decay, Adam's betas and eps, the
warm-up) adds product
axes of the fine-tuning members, in the columns `finetune_<name>`; `sweep.pretrain_optimizer` those of the
pretraining members (after the LR and the prior), in the columns `pretrain_<name>`, which their children carry too.
`sweep.zip` names fine-tuning axes (`finetune_lr`, `spurious`, `finetune_optimizer.<name>`) that vary together
instead of as a product: with `zip=("finetune_lr", "finetune_optimizer.weight_decay")`, LR i goes with weight
decay i.
"""
from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pandas as pd

from fttrace.engine import protocols
from fttrace.model.transformer import ModelConfig
from fttrace.engine.train import OPTIMIZER_AXES
from fttrace.answer.tasks.registry import build_task


@dataclasses.dataclass
class Group:
    index: int
    shape: dict  # model-field overrides shared by the group's members
    model: ModelConfig
    pretrain: pd.DataFrame  # one row per pretraining member
    finetune: pd.DataFrame  # one row per fine-tuning member; `parent_index` indexes `pretrain` rows

    @property
    def parent_index(self):
        return self.finetune["parent_index"].to_numpy()

    def phase(self, config, name: str):
        """The config section of phase `name` for this group (its phase-budget shapes applied)."""
        return phase_config(config, self.shape, name)


def _named(value, table):
    return (float(table[value]), value) if isinstance(value, str) else (float(value), "")


# Shape axes that are phase budgets, not model fields: axis name -> (config section, key).
PHASE_SHAPES = {"pretrain_steps": ("pretrain", "steps")}


def phase_config(config, shape: dict, phase: str):
    """The `phase` section of `config` with the group's phase-budget shapes applied."""
    section = config[phase]
    overrides = {key: shape[axis] for axis, (name, key) in PHASE_SHAPES.items() if name == phase and axis in shape}
    if not overrides:
        return section
    section = section.copy_and_resolve_references()
    section.update(overrides)
    return section


def model_config(config, shape: dict) -> ModelConfig:
    """The group's model: `config.model` with the group's shape, or a task's pretrained model as it is."""
    task = build_task(config)
    if task.pretrained_model is not None:
        return task.pretrained_model.model_config
    fields = dict(config.model)
    fields.update({k: v for k, v in shape.items() if k not in PHASE_SHAPES})
    fields.setdefault("vocab_size", task.vocab_size)
    fields["vocab_size"] = fields["vocab_size"] or task.vocab_size
    fields["max_len"] = fields.get("max_len") or task.seq_len
    return ModelConfig.from_config(fields)


def finetune_axes(config) -> dict[str, list]:
    """The axes of a parent's fine-tuning children, in the order their product numbers the children: the LR, C_Tr,
    then the swept optimiser hyperparameters (`finetune_optimizer.<name>`, alphabetical)."""
    sweep = config.sweep
    axes = {"finetune_lr": list(sweep.finetune_lr), "spurious": list(sweep.spurious)}
    for name, values in sorted(dict(sweep.get("finetune_optimizer", {})).items()):
        axes[f"finetune_optimizer.{name}"] = list(values)
    return axes


def child_settings(config) -> list[dict]:
    """One {axis: value} per fine-tuning child of a parent: the product of `finetune_axes`, except that the axes
    named in `sweep.zip` vary together (the i-th values of each make one child), at the place of the first of them."""
    axes = finetune_axes(config)
    zipped = [name for name in axes if name in config.sweep.get("zip", ())]  # in the axes' order
    factors = []
    for name, values in axes.items():
        if name not in zipped:
            factors.append([{name: v} for v in values])
        elif name == zipped[0]:
            factors.append([dict(zip(zipped, together)) for together in zip(*(axes[a] for a in zipped))])
    return [{k: v for part in combination for k, v in part.items()} for combination in itertools.product(*factors)]


def optimizer_values(members: pd.DataFrame, phase: str) -> dict:
    """{name: [members]} of the optimiser hyperparameters these members' rows set for `phase` (train.new_state)."""
    prefix = f"{phase}_"
    return {c[len(prefix):]: members[c].to_numpy(np.float32) for c in members
            if c.startswith(prefix) and c[len(prefix):] in OPTIMIZER_AXES}


def shape_grid(config) -> list[dict]:
    """One {axis: value} per group of `sweep.shapes` (their product, axes in alphabetical order): [{}] without."""
    shapes = dict(config.sweep.get("shapes", {}))
    keys = sorted(shapes)
    return [dict(zip(keys, values)) for values in itertools.product(*(shapes[k] for k in keys))]


def fine_tuned(config, parent: dict) -> bool:
    """Whether a pretraining member has fine-tuning children: its prior is among `sweep.finetune_priors` (by name or
    value; empty: every prior). The others are pretrained and measured only (the regime's check at that prior)."""
    chosen = tuple(config.sweep.get("finetune_priors", ()))
    return not chosen or any(p == (parent["prior_name"] if isinstance(p, str) else parent["prior"]) for p in chosen)


def build_groups(config) -> list[Group]:
    sweep = config.sweep
    seeds = [sweep.get("seed_offset", 0) + s for s in range(sweep.seeds)]
    grid = shape_grid(config)
    protocol_columns = [protocols.member_columns(config, name) for name in sweep.get("protocol", ())] or [{}]
    children = list(itertools.product(protocol_columns, child_settings(config)))
    pretrain_optimizer = sorted(dict(sweep.get("pretrain_optimizer", {})).items())  # [(name, values)], by name
    cells = list(itertools.product(sweep.pretrain_lr, sweep.prior, *(values for _, values in pretrain_optimizer)))
    per_group = len(cells)  # pretraining members per seed and group
    per_seed = per_group * len(grid)  # ... per seed, over every group
    groups = []
    for g, shape in enumerate(grid):
        pt_rows = []
        for seed in seeds:
            for j, (lr, prior, *optimizer) in enumerate(cells):
                p, p_name = _named(prior, config.task.priors)
                number = seed * per_seed + g * per_group + j
                swept = {f"pretrain_{name}": float(v) for (name, _), v in zip(pretrain_optimizer, optimizer)}
                pt_rows.append(dict(member=f"pt{number}", seed=seed, pretrain_lr=float(lr), prior=p,
                                    prior_name=p_name, group=g, **shape, **swept))
        ft_rows = []
        for i, parent in enumerate(pt_rows):
            if not fine_tuned(config, parent):
                continue
            first = int(parent["member"][2:]) * len(children)
            for k, (protocol, child) in enumerate(children):
                scale, lr_name = _named(child["finetune_lr"], config.finetune.lr_scale)
                lr = parent["pretrain_lr"] * scale if lr_name else scale
                optimizer = {f"finetune_{name.split('.')[1]}": float(v) for name, v in child.items()
                             if name.startswith("finetune_optimizer.")}
                ft_rows.append(dict(parent, member=f"ft{first + k}", parent=parent["member"], parent_index=i,
                                    finetune_lr=lr, finetune_lr_name=lr_name, spurious=float(child["spurious"]),
                                    **protocol, **optimizer))
        groups.append(Group(g, shape, model_config(config, shape), pd.DataFrame(pt_rows), pd.DataFrame(ft_rows)))
    return groups


def shard_groups(groups: list[Group], index: int, count: int) -> list[Group]:
    """Shard `index` of `count`: the lineages whose fine-tuned pretraining member's grid-wide number is `index` modulo
    `count`; a pretraining member without fine-tuning children (`sweep.finetune_priors`) goes with the j-th
    fine-tuned lineage of its group (j modulo their number), so that no shard holds a group without fine-tuning.

    Dealing round-robin keeps shards equal in size within every group; each shard is self-contained (parents
    travel with their children) and keeps the grid-wide member ids and group indices. Empty groups are dropped.
    """
    out, first = [], 0
    for group in groups:
        children = np.isin(np.arange(len(group.pretrain)), group.parent_index)
        position = np.empty(len(group.pretrain), int)  # each pretraining member's place in the dealing order
        position[children] = first + np.arange(children.sum())
        position[~children] = position[children][np.arange((~children).sum()) % max(children.sum(), 1)]
        first += int(children.sum())
        keep = position % count == index
        if not keep.any():
            continue
        new_index = np.cumsum(keep) - 1  # old pretraining row -> row within the shard
        finetune = group.finetune[keep[group.parent_index]].reset_index(drop=True)
        finetune["parent_index"] = new_index[finetune["parent_index"].to_numpy()]
        out.append(dataclasses.replace(group, pretrain=group.pretrain[keep].reset_index(drop=True),
                                       finetune=finetune))
    return out


HYPERPARAMETER_COLUMNS = ("group", "seed", "pretrain_lr", "prior", "prior_name", "finetune_lr", "finetune_lr_name",
                          "spurious")  # and protocols.COLUMNS in a sweep over protocols
