"""The stories section of the analysis: its tables on a store whose numbers are chosen, the page and summary of a
real tiny run, and bad input."""
import json
import re

import numpy as np
import pandas as pd
import pytest

from analysis import stories
from analysis.cli import main
from fttrace import cli
from helpers import ROOT

CONFIG = str(ROOT / "configs" / "stories_twist.py")
SMALL, LARGE = 4e-4, 4e-3
# Per arm (phase, pretraining data, deletion, deletion LR): the feature rate (asked) of seed 0 and seed 1 at the
# phase's last step. With two seeds the bootstrap interval of the mean is exactly [lower, higher].
LAST = {("pretrain", "none", "none", np.nan): (0.2, 0.4),
        ("pretrain", "filter", "filter", np.nan): (0.0, 0.0),
        ("finetune", "none", "filter", SMALL): (0.1, 0.3),
        ("finetune", "none", "filter", LARGE): (0.0, 0.1),
        ("finetune", "none", "mix_match", SMALL): (0.5, 0.5),
        ("recovery", "none", "filter", SMALL): (0.3, 0.5),
        ("recovery", "none", "filter", LARGE): (0.2, 0.6),
        ("recovery", "none", "mix_match", SMALL): (0.1, 0.2),
        ("recovery", "filter", "control", np.nan): (0.0, 0.2)}
LAST_STEP = {"pretrain": 100, "finetune": 20, "recovery": 30}
RECOVERY_STEPS = (0, 10, 30)
# steps_to_pretrained_rate of seeds 0 and 1 per recovery arm (NaN: never reached)
REACHED = {"filter": {SMALL: (10, 30), LARGE: (30, np.nan)}, "mix_match": {SMALL: (np.nan, np.nan)},
           "control": {np.nan: (np.nan, np.nan)}}
SAMPLES = 64  # stories sampled per side (asked, not asked)
# stop_step of seeds 0 and 1 per deletion arm (-1: never reached the deletion criterion)
STOPS = {("filter", SMALL): (10, -1), ("filter", LARGE): (10, 20), ("mix_match", SMALL): (-1, -1)}


def synthetic_frame() -> pd.DataFrame:
    """A stories store's rows with known values: rates at each phase's last step from LAST, other metrics derived
    from them, decoy values at earlier steps, probes at each phase's end and on the untrained models."""
    rows, members = [], {}

    def add(key, seed, step, metric, value):
        phase, pretrain_data, deletion, lr = key
        member = members.setdefault((key, seed), len(members))
        rows.append(dict(member=member, parent=np.nan, phase=phase, step=step, metric=metric, value=value,
                         status="ok", seed=seed, pretrain_data=pretrain_data, deletion=deletion,
                         data=deletion, finetune_lr=lr, recovery_lr=1e-3 if phase == "recovery" else np.nan))

    for key, values in LAST.items():
        phase = key[0]
        for seed, rate in enumerate(values):
            steps = RECOVERY_STEPS if phase == "recovery" else (0, LAST_STEP[phase])
            for step in steps:
                # the curve climbs to `rate`: rate x step / last step
                value = rate * step / LAST_STEP[phase] if phase == "recovery" else (
                    rate if step == LAST_STEP[phase] else 0.9)
                add(key, seed, step, "feature_rate", value)
                add(key, seed, step, "feature_rate_unasked", value / 2)
                add(key, seed, step, "feature_gap", value / 2)
                add(key, seed, step, "feature_gap_se",
                    np.sqrt((value * (1 - value) + value / 2 * (1 - value / 2)) / SAMPLES))
                add(key, seed, step, "feature_samples", SAMPLES)
                # another feature's rate: 0.5 in pretraining, lower by 0.1 x seed after deletion
                add(key, seed, step, "other_rate.Dialogue", 0.5 - 0.1 * seed * (phase == "finetune"))
                add(key, seed, step, "refusal_rate", 0.0 if step else 0.7)
                add(key, seed, step, "val_loss", 2.0 + seed)
            last = LAST_STEP[phase]
            # the story probe: 0.9 for the feature at layer 1, its control target 0.6 (seed 0) / 0.7 (seed 1)
            add(key, seed, last, "probe_story.layer1", 0.9)
            add(key, seed, last, "probe_story_control.layer1", 0.6 + 0.1 * seed)
            add(key, seed, last, "probe_acc.layer0", 0.5)
            add(key, seed, last, "probe_acc.layer1", 0.8 + 0.1 * seed)
            if phase == "pretrain":  # the untrained models: the same initialisation in both arms of a seed
                add(key, seed, 0, "probe_story.layer1", 0.6)
                add(key, seed, 0, "probe_story_control.layer1", 0.6)
                add(key, seed, 0, "probe_acc.layer0", 0.5)
                add(key, seed, 0, "probe_acc.layer1", 0.6 + 0.1 * seed)
            if phase == "finetune":
                add(key, seed, last, "stop_step", STOPS[key[2], key[3]][seed])
            if phase == "recovery":
                add(key, seed, last, "pretrained_rate", LAST[("pretrain", "none", "none", np.nan)][seed])
                add(key, seed, last, "steps_to_pretrained_rate", REACHED[key[2]][key[3]][seed])
    return pd.DataFrame(rows)


def write_store(path, frame, study="stories_twist", threshold=0.9, status="done"):
    path.mkdir(parents=True)
    frame.to_parquet(path / "results.parquet", index=False)
    (path / "manifest.json").write_text(json.dumps({"config": {"study": study, "recovery": {"threshold": threshold}},
                                                    "status": status}))
    return path


def cell(table, **where):
    mask = np.ones(len(table), bool)
    for column, value in where.items():
        mask &= table[column].isna().to_numpy() if value is None else (table[column] == value).to_numpy()
    assert mask.sum() == 1, where
    return table[mask].iloc[0]


def test_phase_table_is_the_mean_over_seeds_at_each_phase_end():
    table = stories.phase_table(synthetic_frame())
    assert list(zip(table.phase, table.arm)) == [
        ("pretrain", "pretrained"), ("pretrain", "control"), ("finetune", "filter"), ("finetune", "filter"),
        ("finetune", "mix_match"), ("recovery", "filter"), ("recovery", "filter"), ("recovery", "mix_match"),
        ("recovery", "control")]
    assert list(table.lr[2:4]) == [SMALL, LARGE] and (table.seeds == 2).all()
    for (phase, pretrain_data, deletion, lr), (a, b) in LAST.items():
        arm = {"none": "pretrained", "filter": "control"}[pretrain_data] if phase == "pretrain" else deletion
        row = cell(table, phase=phase, arm=arm, lr=None if np.isnan(lr) else lr)
        assert (row.feature_rate, row.feature_rate_lo, row.feature_rate_hi) == pytest.approx((a / 2 + b / 2, a, b))
        assert row.feature_rate_unasked == pytest.approx((a + b) / 4)
        assert row.refusal_rate == 0 and (row.val_loss, row.val_loss_lo, row.val_loss_hi) == (2.5, 2.0, 3.0)
    shown = stories.display_phase_table(synthetic_frame())
    assert shown["feature rate, asked [95% CI]"][0] == "0.30 [0.20, 0.40]" and shown["deletion LR"][2] == "0.0004"
    assert shown["val loss"][0] == "2.500 [2.000, 3.000]"


def test_recovery_curve_has_every_step_per_arm():
    curve = stories.recovery_curve(synthetic_frame())
    row = cell(curve, arm="filter", lr=LARGE, step=10)
    assert (row.feature_rate, row.feature_rate_lo, row.feature_rate_hi) == pytest.approx((4 / 30, 2 / 30, 6 / 30))
    assert cell(curve, arm="control", lr=None, step=0).feature_rate == 0
    shown = stories.display_recovery_curve(synthetic_frame())
    assert list(shown.columns) == ["arm", "deletion LR", "seeds", "step 0", "step 10", "step 30"]
    assert list(shown.arm) == ["filter", "filter", "mix_match", "control"]
    assert shown["step 30"].tolist() == ["0.40 [0.30, 0.50]", "0.40 [0.20, 0.60]", "0.15 [0.10, 0.20]",
                                         "0.10 [0.00, 0.20]"]


def test_reach_table_counts_members_and_averages_their_steps():
    table = stories.reach_table(synthetic_frame())
    small = cell(table, arm="filter", lr=SMALL)
    assert (small.members, small.with_target, small.reached) == (2, 2, 2)
    assert (small.steps, small.steps_lo, small.steps_hi) == (20, 10, 30)
    large = cell(table, arm="filter", lr=LARGE)
    assert large.reached == 1 and large.steps == 30 and np.isnan(large.steps_lo)
    assert cell(table, arm="control", lr=None).reached == 0
    shown = stories.display_reach_table(synthetic_frame())
    assert shown["reach the pretrained rate"].tolist() == ["2/2", "1/2", "0/2", "0/2"]
    assert shown["steps to reach it [95% CI]"].tolist() == ["20.0 [10.0, 30.0]", "30.0", "n/a", "n/a"]


def test_regime_table_judges_each_seed_by_its_gap_against_sampling_noise():
    # over 64 stories a side, seed 0: 0.2 asked vs 0.1 not: gap 0.10 < 1.96 SE (0.12); seed 1: 0.4 vs 0.2: 0.20 > 0.15
    table = stories.regime_table(synthetic_frame())
    assert table.seed.tolist() == [0, 1] and table.capability.tolist() == [False, True]
    assert table.gap.tolist() == pytest.approx([0.1, 0.2]) and (table.samples == SAMPLES).all()
    assert table.control_asked.tolist() == [0.0, 0.0] and table.untrained_asked.tolist() == [0.9, 0.9]
    assert stories.regime_flag(synthetic_frame()).startswith("Seeds 0 (1 of 2): the pretrained model lacks")
    shown = stories.display_regime_table(synthetic_frame())
    assert shown["gap [1.96 SE]"].tolist() == ["+0.10 [0.12]", "+0.20 [0.15]"]
    # a store written before the gap was measured has no regime table (and the page says nothing of it)
    frame = synthetic_frame()
    assert stories.regime_table(frame[frame.metric != "feature_gap_se"]).empty


def test_deletion_table_counts_members_at_the_criterion_and_measures_side_effects():
    table = stories.deletion_table(synthetic_frame())
    small, large = cell(table, arm="filter", lr=SMALL), cell(table, arm="filter", lr=LARGE)
    assert (small.members, small.stopped, small.stop_step) == (2, 1, 10) and np.isnan(small.stop_step_lo)
    assert (large.stopped, large.stop_step, large.stop_step_lo, large.stop_step_hi) == (2, 15, 10, 20)
    mix = cell(table, arm="mix_match", lr=SMALL)
    assert mix.stopped == 0 and np.isnan(mix.stop_step)
    assert (small.gap, small.gap_lo, small.gap_hi) == pytest.approx((0.1, 0.05, 0.15))
    assert small.val_loss_change == 0  # the seed's pretrained model's held-out loss is the same
    assert (small.others_change, small.others_change_lo, small.others_change_hi) == pytest.approx((-0.05, -0.1, 0))
    shown = stories.display_deletion_table(synthetic_frame())
    assert shown["reached the criterion"].tolist() == ["1/2", "2/2", "0/2"]


def test_survival_table_censors_members_that_never_regain_and_tests_against_the_control():
    # recovery curves climb linearly to their last value (steps 0, 10, 30); targets 0.9 x the seed's pretrained rate
    # (0.18 and 0.36): filter (0.3 / 0.5 and 0.2 / 0.6 at step 30) gets there at step 30, mix_match (0.1 / 0.2) and
    # the control (0.0 / 0.2) never: censored at the budget (30), not dropped
    table = stories.survival_table(synthetic_frame(), "feature_rate")
    small, large = cell(table, arm="filter", lr=SMALL), cell(table, arm="filter", lr=LARGE)
    assert (small.members, small.regained, small["median"]) == (2, 2, 30) and large.regained == 2
    mix, control = cell(table, arm="mix_match", lr=SMALL), cell(table, arm="control", lr=None)
    assert (mix.regained, control.regained) == (0, 0) and np.isnan(mix["median"]) and np.isnan(control.logrank_p)
    assert 0 < small.logrank_p < 0.2 and mix.reason.startswith("no revivals at all")
    steps = stories.regain_steps(synthetic_frame(), "feature_rate").set_index("arm")
    assert set(steps.loc["control"].duration) == {30.0} and not steps.loc["control"].observed.any()
    # the gap (half the rate here) against 0.9 x the pretrained gap: the same steps, as it scales alike
    gap = stories.survival_table(synthetic_frame(), "feature_gap")
    assert gap[["arm", "regained", "median"]].equals(table[["arm", "regained", "median"]])
    shown = stories.display_survival_table(synthetic_frame())
    assert shown.arm.tolist() == ["filter", "filter", "mix_match", "control"]
    assert shown["rate asked: median steps"].tolist() == ["30", "30", "not reached", "not reached"]
    assert shown["asked - not asked: regained"].tolist() == ["2/2", "2/2", "0/2", "0/2"]


def test_story_probe_table_reads_selectivity_against_the_control_target():
    table = stories.story_probe_table(synthetic_frame())
    untrained = cell(table, phase="untrained", layer=1)
    assert untrained.selectivity == pytest.approx(0) and untrained.story == pytest.approx(0.6)
    row = cell(table, phase="finetune", arm="filter", lr=LARGE, layer=1)
    assert (row.selectivity, row.selectivity_lo, row.selectivity_hi) == pytest.approx((0.25, 0.2, 0.3))
    assert (row.story, row.control) == pytest.approx((0.9, 0.65))
    shown = stories.display_story_probe_table(synthetic_frame())
    assert shown.stage.tolist()[0] == "untrained" and shown["layer 1"][1] == "0.25 [0.20, 0.30] (0.90 - 0.65)"
    frame = synthetic_frame()
    assert stories.story_probe_table(frame[~frame.metric.str.startswith("probe_story")]).empty


def test_probe_table_puts_the_untrained_models_first():
    table = stories.probe_table(synthetic_frame())
    untrained = cell(table, phase="untrained", layer=1)
    assert untrained.seeds == 2 and (untrained.accuracy, untrained.accuracy_lo, untrained.accuracy_hi) == \
        pytest.approx((0.65, 0.6, 0.7))
    assert cell(table, phase="finetune", arm="filter", lr=LARGE, layer=1).accuracy == pytest.approx(0.85)
    shown = stories.display_probe_table(synthetic_frame())
    assert list(shown.columns) == ["stage", "arm", "deletion LR", "seeds", "layer 0", "layer 1"]
    assert shown.stage.tolist()[:3] == ["untrained", "pretrain", "pretrain"]
    assert shown["layer 1"][0] == "0.65 [0.60, 0.70]" and shown["layer 0"][0] == "0.50 [0.50, 0.50]"


def test_synthetic_store_gets_its_page_and_summary(tmp_path, capsys):
    store = write_store(tmp_path / "run", synthetic_frame())
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="stories"' in page and "reaches 0.9 x the rate" in page
    assert "Jain et al., ICLR 2024, Table 1" in page  # the reference numbers name their source
    assert main(["summary", str(store)]) == 0
    printed = capsys.readouterr().out
    assert "0.40 [0.20, 0.60]" in printed and "Recovery to 0.9 x the seed's pretrained rate" in printed
    assert printed.split("\n")[1].startswith("Regime: does the pretrained model write the feature when asked")
    assert "Seeds 0 (1 of 2): the pretrained model lacks the capability" in printed
    assert "Steps to regain 0.9 x the seed's pretrained rate (asked) and gap" in printed
    assert "Deletion per deletion x LR" in printed
    assert "Regime: does the pretrained model have the capability?" in page and "Steps to regain" in page
    assert "Story probe, 'this story has the feature'" in printed and "Probe: does the story have the feature?" in page
    assert "Reference study (Jain et al., ICLR 2024, Table 1)" in printed


def test_an_unfinished_run_says_so_and_names_the_phases_it_has_not_written(tmp_path, capsys):
    frame = synthetic_frame()
    store = write_store(tmp_path / "run", frame[frame.phase != "recovery"], status="running")
    assert main(["summary", str(store)]) == 0
    first = capsys.readouterr().out.split("\n")[0]
    assert first == (f"{store}: run status 'running', not 'complete': these are its results so far; no rows yet from "
                     "recovery")
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    assert "no rows yet from recovery" in (tmp_path / "report" / "index.html").read_text()
    done = write_store(tmp_path / "done", frame)
    assert main(["summary", str(done)]) == 0 and "results so far" not in capsys.readouterr().out


def test_stores_of_different_configs_are_not_mixed(tmp_path, capsys):
    frame = synthetic_frame()
    first = write_store(tmp_path / "a", frame[frame.seed == 0])
    other = write_store(tmp_path / "b", frame[frame.seed == 1], threshold=0.5)
    assert main(["summary", str(first), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analysis: error: ") and "hold different configs (recovery.threshold)" in err
    same = write_store(tmp_path / "c", frame[frame.seed == 1])  # the other seed of the same config: one run's shards
    assert main(["summary", str(first), str(same)]) == 0


def test_a_store_that_named_its_deletions_protocols_reads_the_same(tmp_path, capsys):
    earlier = synthetic_frame().rename(columns={"pretrain_data": "pretrain_protocol", "deletion": "protocol"})
    stores = [write_store(tmp_path / "now", synthetic_frame()), write_store(tmp_path / "earlier", earlier)]
    printed = []
    for store in stores:
        assert main(["summary", str(store)]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1] and "0.40 [0.20, 0.60]" in printed[1]


@pytest.mark.parametrize("option", [["--by", "seed"], ["--threshold", "probe_ratio=0.8"]])
def test_wrapper_options_on_a_stories_store_are_refused(tmp_path, capsys, option):
    store = write_store(tmp_path / "run", synthetic_frame())
    assert main(["summary", str(store), *option]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("analysis: error: --by and --threshold apply to the wrapper analysis; the "
                                   "stories_twist study") and not captured.out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The stories config's tiny form (1 seed, every deletion at one deletion LR) run once through the CLI into
    ROOT/run, and its report in ROOT/report."""
    root = tmp_path_factory.mktemp("stories")
    assert cli.main(["run", f"{CONFIG}:tiny", "--workdir", str(root / "run"), "-q"]) == 0
    assert main(["report", str(root / "run"), "--out", str(root / "report")]) == 0
    return root


def test_report_of_a_tiny_run_has_the_section_and_its_figures(tiny):
    page = (tiny / "report" / "index.html").read_text()
    assert 'id="stories"' in page and "Recovery curve" in page and "Probe: does the header ask" in page
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) == 2 and all(src.startswith("data:image/png;base64,") for src in images)
    for name in ("stories-recovery", "stories-probes"):
        assert {f.name for f in (tiny / "report" / "figures").glob(f"{name}.*")} == {f"{name}.png", f"{name}.svg"}


def test_summary_of_a_tiny_run_prints_the_recovery_curve(tiny, capsys):
    assert main(["summary", str(tiny / "run")]) == 0
    printed = capsys.readouterr().out
    curve = printed.split("Recovery curve: feature rate (asked) per recovery eval step:\n")[1].splitlines()
    assert curve[0].split() == ["arm", "deletion", "LR", "seeds", "step", "0", "step", "2", "step", "6"]
    assert [line.split()[0] for line in curve[1:6]] == ["filter", "filter_label", "mix_match", "refusal", "control"]
    assert ("Reference study (Jain et al., ICLR 2024, Table 1), its own numbers at its own recovery steps (not "
            "ours):") in printed
    assert "untrained" in printed.split("Probe accuracy")[1]


@pytest.mark.parametrize("damage, message", [
    ("no results", "no results.parquet"),
    ("no deletion column", "not a stories results store (missing columns: deletion)"),
    ("no feature rates", "no feature_rate rows"),
])
def test_bad_stores_are_one_line_with_exit_status_2(tmp_path, capsys, damage, message):
    frame = synthetic_frame()
    frame = {"no deletion column": frame.drop(columns="deletion"),
             "no feature rates": frame[frame.metric != "feature_rate"]}.get(damage, frame)
    store = write_store(tmp_path / "run", frame)
    if damage == "no results":
        (store / "results.parquet").unlink()
    assert main(["summary", str(store)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("analysis: error: ") and message in captured.err
    assert captured.err.count("\n") == 1 and not captured.out
