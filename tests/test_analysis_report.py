"""The report and the terminal summary of a study in the engine's schema, and the command's errors."""
import re

import pytest

from analysis.cli import main
from synthetic_store import Plant, build_frame, write_store

SECTIONS = ("regime", "taxonomy", "claims", "survival", "instruments", "figures", "nulls", "members", "config",
            "manifest")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: "wrapper" if lr == "medium" else "overwrite")
    return write_store(tmp_path_factory.mktemp("analysis") / "run", plant)


def test_the_report_opens_with_the_regime_and_holds_every_section(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    page = (out / "index.html").read_text()
    starts = [page.index(f'<section id="{name}"') for name in SECTIONS]
    assert starts == sorted(starts)
    assert "Regime: what the models can do, before any verdict" in page
    assert "What fine-tuning did to C_PT" in page and "fine-tuning LR medium, prior high, C_Tr 0" in page
    assert "Survival of reFT" in page and "T_prune = " in page and "T_reft = " in page
    # Self-contained: every image is inline and nothing refers to another file or the network.
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) >= 6 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.findall(r'(?:src|href)="(?!data:|#)[^"]*"', page)
    pngs, svgs = ({p.stem for p in (out / "figures").glob(f"*.{ext}")} for ext in ("png", "svg"))
    assert pngs == svgs and {"classes", "pruning-neurons", "probe", "reft", "survival", "attention",
                             "training"} <= pngs
    evidence = (out / "evidence.csv").read_text().splitlines()
    assert evidence[0].startswith("finetuned,pretrained,reft,seed,finetune_lr_label,prior_label,spurious,taxon,reason")
    assert "prune_random_gain" in evidence[0] and "sel_control" in evidence[0] and len(evidence) == 1 + 6


def test_the_summary_opens_with_the_regime(store, capsys):
    assert main(["summary", str(store)]) == 0
    printed = capsys.readouterr().out
    assert "3 pretrained, 6 fine-tuned, 6 reverse-fine-tuned, 3 control members over 3 seed(s)" in printed
    titles = ["== Regime", "== What fine-tuning did to C_PT", "== Claims", "== Survival of reFT",
              "== Instruments against their nulls", "== Nulls and parameters"]
    at = [printed.index(t) for t in titles]
    assert at == sorted(at) and printed.index("== ") == at[0]
    assert "fine-tuning LR medium, prior high, C_Tr 0: HIDDEN WRAPPER" in printed
    assert "fine-tuning LR large, prior high, C_Tr 0: OVERWRITE" in printed
    assert "power " in printed and "T_prune = " in printed


def test_a_run_in_progress_gets_a_report_of_what_it_has(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    run = write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"], status="running")
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "run status &#x27;running&#x27;" in page and "cannot be shown yet" in page
    assert "No fine-tuned member could be judged (no fine-tuned members)." in page
    assert "Training curves per phase" in page and "Not drawn (no data in the store)" in page


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("small") / "run", Plant(seeds=2, priors=("high",), lrs=("medium",),
                                                                      spurious=(0.0,)))


@pytest.mark.parametrize("args, message", [
    (["summary", "{tmp}/nowhere"], "{tmp}/nowhere: no such directory"),
    (["summary", "{store}", "--threshold", "null_quantile=high"],
     "threshold 'null_quantile=high': 'high' is not a number"),
    (["summary", "{store}", "--threshold", "probe_ratio=0.8"], "threshold 'probe_ratio=0.8': expected NAME=VALUE"),
    (["summary", "{store}", "--threshold", "noop_accuracy=2"], "parameter noop_accuracy=2 is outside [0, 1]"),
    (["summary", "{store}", "--by", "colour"], "cannot group by colour: not a column of the results"),
    (["report", "{store}", "--out", "{store}/results.parquet"], "cannot write the report into"),
])
def test_errors_are_one_line_with_exit_status_2(small, tmp_path, capsys, args, message):
    fill = dict(tmp=tmp_path, store=small)
    assert main([a.format(**fill) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"analysis: error: {captured.err.removeprefix('analysis: error: ')}"
    assert message.format(**fill) in captured.err and captured.err.count("\n") == 1 and not captured.out


def test_a_parameter_from_the_command_line_reaches_the_taxonomy(small, capsys):
    assert main(["summary", str(small), "--threshold", "null_quantile=0.99", "--threshold", "prune_units=20"]) == 0
    printed = capsys.readouterr().out
    assert "the 0.99 quantile of" in printed and "20, 0.05" in printed


def test_grouping_by_a_column_splits_the_settings(small, capsys):
    assert main(["summary", str(small), "--by", "seed"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuning LR medium, prior high, C_Tr 0, seed 0: OVERWRITE" in printed
    assert "fine-tuning LR medium, prior high, C_Tr 0, seed 1: OVERWRITE" in printed
