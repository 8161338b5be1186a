"""Survival of reFT: Kaplan-Meier curves of the suppressed members' reFT children beside their matched controls,
each control counted once per cell, with hand-computed medians and restricted means."""
import pytest

from analysis.load import load_study
from analysis.revival import REFT_ARM, control_arm, display, km_steps, revival
from analysis.taxonomy import taxonomy
from synthetic_store import CONTROL_STEPS, REFT_STEPS, WRAPPER_REFT_STEP, Plant, write_store


@pytest.fixture(scope="module")
def found(tmp_path_factory):
    plant = Plant(seeds=4, priors=("high", "low"), lrs=("small", "medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: {"small": "kept", "medium": "wrapper", "large": "overwrite"}[lr])
    study = load_study(write_store(tmp_path_factory.mktemp("revival") / "run", plant))
    return revival(study, taxonomy(study).evidence)


def test_curves_per_lr_count_each_control_once(found):
    table = found.by_lr.set_index(["finetune_lr_label", "arm"])
    assert "small" not in set(found.by_lr.finetune_lr_label)  # kept members have nothing to revive
    medium = table.loc[("medium", REFT_ARM)]
    assert (medium.runs, medium.revived, medium["median steps"]) == (8, 8, WRAPPER_REFT_STEP)
    # One control per seed (4 seeds; shared reFT LR), whichever prior or LR its lineages had: revivals at
    # 150, 300, 200, 450 give S = 0.75, 0.5, 0.25, 0 there, so the median is 200 and the area up to the budget is
    # 150 + 0.75 x 50 + 0.5 x 100 + 0.25 x 150 = 275.
    steps = sorted(CONTROL_STEPS[1.0][:4])
    assert steps == [150, 200, 300, 450]
    for lr in ("medium", "large"):
        control = table.loc[(lr, control_arm(1.0))]
        assert (control.runs, control.revived, control["median steps"]) == (4, 4, 200)
        assert control["restricted mean steps"] == pytest.approx(275.0)
    large = table.loc[("large", REFT_ARM)]
    assert large.revived == 0 and large["restricted mean steps"] == REFT_STEPS
    assert display(found.by_lr).set_index(["fine-tuning LR", "arm"]).loc[("large", REFT_ARM), "median steps"] == \
        "not reached"
    per_prior = found.by_prior.set_index(["finetune_lr_label", "prior_label", "arm"])
    assert per_prior.loc[("medium", "high", control_arm(1.0)), "runs"] == 4
    assert per_prior.loc[("medium", "high", REFT_ARM), "runs"] == 4


def test_log_rank_and_cox_tell_revival_speeds_apart(found):
    tests = found.logrank.set_index("finetune_lr_label")
    assert tests.loc["medium", "p"] < 0.01 and tests.loc["large", "p"] < 0.05
    assert tests.loc["medium", "runs"] == 8 + 4
    # The reFT children revive at 50 (medium) or never (large): the LR orders them without overlap.
    assert not found.cox.available and "does not converge" in found.cox.reason
    curves = km_steps(found.runs)
    assert set(curves) == {(lr, arm) for lr in ("medium", "large")
                           for arm in (REFT_ARM, control_arm(1.0), control_arm(10.0))}


def test_the_cox_regression_finds_slower_revival_at_a_larger_lr(tmp_path):
    plant = Plant(seeds=15, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: {"reft-only": 0.9, "overwrite": 0.1} if lr == "medium" else
                  {"reft-only": 0.1, "overwrite": 0.9})
    study = load_study(write_store(tmp_path / "run", plant))
    cox = revival(study, taxonomy(study).evidence).cox
    assert cox.available, cox.reason
    lr = cox.table.set_index("term").loc["log10 fine-tuning LR"]
    assert lr.hazard_ratio < 1 and lr.p < 0.05
