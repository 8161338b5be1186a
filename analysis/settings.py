"""The settings (cells) of a study: fine-tuning LR x sampling prior x spurious strength C_Tr, plus any columns the
user groups by; their readable names and their order by meaning (LRs small to large, priors high to low), so that
every table of the report lists its cells the same way.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

SETTING = ("finetune_lr_label", "prior_label", "spurious")
COLUMN_NAMES = {"finetune_lr_label": "fine-tuning LR", "prior_label": "prior", "spurious": "C_Tr"}
# Sort keys of the label columns: LRs small -> large, priors high -> low.
SORT_KEYS = {"finetune_lr_label": ("finetune_lr", 1), "prior_label": ("prior", -1)}
# Member columns that are not a model or shape scale (hyperparameters, ids, labels, protocol descriptions).
NOT_SCALES = {"member", "kind", "parent", "pretrained", "status", "store", "group", "seed", "pretrain_lr", "prior",
              "prior_name", "finetune_lr", "finetune_lr_name", "spurious", "reft_lr", "reft_lr_base",
              "control_lr_factor", "finetune_lr_label", "prior_label", "lora_rank", "top_k_layers", "l2sp"}


FINETUNE_AXIS = "finetune_"  # fttrace's swept fine-tuning optimiser hyperparameters: finetune_weight_decay, ...
NOT_AXES = {"finetune_lr", "finetune_lr_name", "finetune_lr_label"}
# The optimiser hyperparameters a sweep may vary per member (fttrace's train.OPTIMIZER_AXES; the analysis does not
# import fttrace), as pretraining columns: pretrain_weight_decay, ...
PRETRAIN_OPTIMIZER = tuple(f"pretrain_{name}" for name in ("weight_decay", "b1", "b2", "eps"))


def pretrain_axes(members: pd.DataFrame) -> list[str]:
    """The swept pretraining optimiser hyperparameters present among these members' columns."""
    return [c for c in PRETRAIN_OPTIMIZER if c in members]


def swept_axes(members: pd.DataFrame) -> list[str]:
    """The optimiser hyperparameters the sweep varied (columns finetune_<name> other than the LR, and
    pretrain_<name>): each is a setting column of its own, so that no cell pools members trained differently."""
    fine = members[members.kind == "finetuned"] if "kind" in members else members
    return [c for c in fine.columns if (c.startswith(FINETUNE_AXIS) and c not in NOT_AXES or c in PRETRAIN_OPTIMIZER)
            and fine[c].nunique(dropna=True) > 1]


def setting_columns(by=()) -> list[str]:
    return [*SETTING, *(c for c in by if c not in SETTING)]


def in_setting_order(table: pd.DataFrame, source: pd.DataFrame, columns) -> pd.DataFrame:
    """Rows sorted by each setting column's meaning (LR value, prior value descending), not alphabetically."""
    keys = {}
    for column in columns:
        if column in SORT_KEYS:
            value, sign = SORT_KEYS[column]
            order = source.groupby(column)[value].first() * sign
            keys[column] = table[column].map(order)
        else:
            keys[column] = table[column]
    order = pd.DataFrame(keys).sort_values(list(columns), kind="stable").index
    return table.loc[order].reset_index(drop=True)


def plain(value) -> str:
    """A setting value as text: floats without trailing zeros."""
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def column_name(column: str) -> str:
    """A setting column's readable name ('fine-tuning LR', 'fine-tuning weight decay', 'd_model')."""
    if column in COLUMN_NAMES:
        return COLUMN_NAMES[column]
    if column.startswith(FINETUNE_AXIS):
        return "fine-tuning " + column[len(FINETUNE_AXIS):].replace("_", " ")
    return column


def describe_setting(row, columns) -> str:
    """'fine-tuning LR medium, prior high, C_Tr 0'."""
    return ", ".join(f"{column_name(c)} {plain(row[c])}" for c in columns)


def readable(table: pd.DataFrame, columns) -> pd.DataFrame:
    """The setting columns of `table` under their readable names, values as text."""
    return pd.DataFrame({column_name(c): table[c].map(plain) for c in columns}, index=table.index)


def scale_columns(members: pd.DataFrame) -> list[str]:
    """Numeric model or shape columns (d_model, n_layers, pretrain_steps, ...) that vary among these members."""
    out = []
    for column in members.columns:
        if column in NOT_SCALES or column.startswith(FINETUNE_AXIS) or column in PRETRAIN_OPTIMIZER or \
                not pd.api.types.is_numeric_dtype(
                members[column]):
            continue
        if members[column].nunique(dropna=True) > 1:
            out.append(column)
    return out


def log10(values: pd.Series) -> pd.Series:
    """log10 of the positive values, NaN elsewhere."""
    values = values.astype(float)
    return np.log10(values.where(values > 0))


def predictors(frame: pd.DataFrame, scales=()) -> pd.DataFrame:
    """The settings as regression predictors: log10 fine-tuning LR, log10 prior, C_Tr and log10 of each scale column
    (`scale_columns` of the members); a predictor with no value at all (a prior of 0 everywhere: a compiled model)
    is left out."""
    x = pd.DataFrame({"log10 fine-tuning LR": log10(frame.finetune_lr), "log10 sampling prior": log10(frame.prior),
                      "spurious C_Tr": frame.spurious.astype(float)}, index=frame.index)
    for column in scales:
        x[f"log10 {column}"] = log10(frame[column])
    return x.loc[:, x.notna().any()]
