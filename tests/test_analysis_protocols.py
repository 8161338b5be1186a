"""The protocol comparison (analysis/protocols.py) on a synthetic store with planted protocol effects."""
import numpy as np
import pandas as pd
import pytest

from analysis.analyse import analyse
from analysis.cli import main
from analysis.load import load_study
from analysis.protocols import closing_note, protocol_display, protocol_figure, protocol_table
from synthetic_store import Plant, build_frame, config_for, write_store

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

# Lineages fine-tuned at the medium LR used "lora2" and kept C_PT; those at the large LR used "full", lost C_PT, and
# are hidden wrappers (pruning 5 neurons revives C_PT, reFT is fast).
PLANT = Plant(seeds=4, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
              kind=lambda lr, prior, spurious: "kept" if lr == "medium" else "wrapper")
WEIGHT_CHANGE = {"lora2": 0.1, "full": 0.5}


def protocol_frame() -> pd.DataFrame:
    frame = build_frame(PLANT)
    lineage = frame.member.str.fullmatch(r"r?ft\d+")
    protocol = np.where(frame.finetune_lr_name == "medium", "lora2", "full")
    frame["protocol"] = pd.Series(np.where(lineage, protocol, None), dtype=object)
    frame["protocol_kind"] = pd.Series(np.where(lineage, np.where(protocol == "lora2", "lora", "full"), None),
                                       dtype=object)
    frame["lora_rank"] = np.where(lineage & (protocol == "lora2"), 2.0, np.nan)
    finetuned = frame[(frame.phase == "finetune")].drop_duplicates("member")
    rows = []
    for step, metric in ((-1, "all.weight_change"), (0, "attn.weight_change"), (1, "mlp.weight_change")):
        change = finetuned.protocol.map(WEIGHT_CHANGE) * (1 + 0.01 * finetuned.seed)
        rows.append(finetuned.assign(phase="weights", step=step, metric=metric, value=change))
    return pd.concat([frame, *rows], ignore_index=True)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    config = config_for(PLANT)
    config["sweep"]["protocol"] = ["full", "lora2"]
    return write_store(tmp_path_factory.mktemp("protocols") / "run", PLANT, frame=protocol_frame(), config=config)


def test_the_table_has_one_row_per_protocol_setting_with_seed_intervals(store):
    table = protocol_table(load_study(store))
    assert list(dict.fromkeys(table.protocol)) == ["full", "lora2"]  # the sweep's order
    pt = table[table.measure == "pt_acc"].set_index("protocol")
    assert (pt.seeds == PLANT.seeds).all()
    assert pt.loc["lora2", "value_lo"] > pt.loc["full", "value_hi"]
    change = table[table.measure == "weight_change"].set_index("protocol").value
    assert change["full"] == pytest.approx(0.5 * 1.015) and change["lora2"] == pytest.approx(0.1 * 1.015)
    assert {"attn@0", "mlp@1", "reft_steps", "control_steps", "reft_speedup", "prune_gain15",
            "prune_random15"} <= set(table.measure)
    revived = table[table.measure == "prune_revived"].set_index("protocol").value
    assert revived["full"] == 1.0
    display = protocol_display(table)
    assert len(display) == 2 and "C_PT after FT" in display and "reFT steps to threshold" in display


def test_the_closing_note_names_the_protocols_with_numbers(store):
    note = closing_note(protocol_table(load_study(store)))
    assert note[0].startswith("Best preserves C_PT: lora2 at LR medium")
    pruning = [s for s in note if s.startswith("Largest C_PT gain from pruning <= 15 neurons beyond the random null")]
    assert pruning and pruning[0].split(": ")[1].startswith("full at LR large")
    assert all(any(ch.isdigit() for ch in s) for s in note)


def test_figure_summary_and_report(store, tmp_path, capsys):
    table = protocol_table(load_study(store))
    fig = protocol_figure(table)
    assert len(fig.axes) == 3
    assert main(["summary", str(store)]) == 0
    assert "Fine-tuning protocols" in capsys.readouterr().out
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert 'id="protocols"' in page and "Best preserves C_PT" in page
    assert (tmp_path / "report" / "figures" / "protocols.png").exists()


def test_the_pruning_gain_is_a_mean_over_the_levels_and_can_be_negative(store):
    """The kept members' targeted pruning only hurts C_PT (-0.01 at every level): the gain is negative, where the
    best level over k <= 15 (k = 0 included) could never be."""
    gain = protocol_table(load_study(store))
    gain = gain[gain.measure == "prune_gain15"].set_index("protocol").value
    assert gain["lora2"] == pytest.approx(-0.01) and gain["full"] > 0.3
    assert "C_PT gain, mean over 1..15 neurons pruned" in protocol_display(protocol_table(load_study(store)))


def test_a_study_without_protocols_gets_no_protocol_section(tmp_path):
    a = analyse(write_store(tmp_path / "plain", Plant(seeds=2, priors=("high",), lrs=("large",))))
    assert a.protocols.empty and "Fine-tuning protocols" not in a.summary_text()
