"""The report and the terminal summary of a real (tiny) study, and the command's errors."""
import re

import pytest

from analysis.cli import main
from fttrace.pipeline import run_study
from helpers import tiny_config
from synthetic_store import Plant, build_frame, write_store


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """The smoke config at test scale with every evaluation: 2 seeds, one fine-tuning member each."""
    workdir = tmp_path_factory.mktemp("analysis") / "run"
    run_study(tiny_config("sweep.seeds=2", "sweep.finetune_lr=('medium',)"), workdir, quiet=True)
    return workdir


def test_report_renders_from_a_smoke_run(smoke_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(smoke_run), "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    page = (out / "index.html").read_text()
    # The verdict comes first, then figures, claims, thresholds, config and manifest.
    sections = [page.index(f'<section id="{name}"') for name in
                ("verdict", "figures", "claims", "thresholds", "members", "config", "manifest")]
    assert sections == sorted(sections)
    assert "Did a wrapper emerge?" in page and "fine-tuning LR medium, prior high, C_Tr 1" in page
    # Self-contained: every image is inline and nothing refers to another file or the network.
    images = re.findall(r'<img [^>]*src="([^"]*)"', page)
    assert len(images) >= 5 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.findall(r'(?:src|href)="(?!data:|#)[^"]*"', page)
    # Every figure is also written as PNG and SVG.
    pngs, svgs = ({p.stem for p in (out / "figures").glob(f"*.{ext}")} for ext in ("png", "svg"))
    assert pngs == svgs and {"pruning-neurons", "probe", "reft", "attention", "training"} <= pngs
    assert "probe_ratio" in page and "steps_to_threshold" not in page.split('id="config"')[0]
    assert (out / "evidence.csv").read_text().startswith("finetuned,pretrained,reft")


def test_summary_prints_the_headline(smoke_run, capsys):
    assert main(["summary", str(smoke_run)]) == 0
    printed = capsys.readouterr().out
    assert "2 pretrained, 2 fine-tuned, 2 reverse-fine-tuned members over 2 seed(s)" in printed
    assert "fine-tuning LR medium, prior high, C_Tr 1:" in printed
    assert "Claims of the reference study" in printed
    assert "4a  not tested (" in printed  # the run has no large-LR members


def test_a_run_in_progress_gets_a_report_of_what_it_has(tmp_path, capsys):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    store = write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"], status="running")
    assert main(["report", str(store), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "run status &#x27;running&#x27;" in page
    assert "No fine-tuned member could be judged (no fine-tuned members)." in page
    assert "Training curves per phase" in page and "Not drawn (no data in the store)" in page


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("synthetic") / "run", Plant(seeds=2, priors=("high",),
                                                                          lrs=("medium",), spurious=(0.0,)))


@pytest.mark.parametrize("args, message", [
    (["summary", "{tmp}/nowhere"], "{tmp}/nowhere: no such directory"),
    (["summary", "{store}", "--threshold", "probe_ratio=high"], "threshold 'probe_ratio=high': 'high' is not a number"),
    (["summary", "{store}", "--by", "colour"], "cannot group by colour: not a column of the results"),
    (["report", "{store}", "--out", "{store}/results.parquet"], "cannot write the report into"),
])
def test_errors_are_one_line_with_exit_status_2(synthetic, tmp_path, capsys, args, message):
    fill = dict(tmp=tmp_path, store=synthetic)
    assert main([a.format(**fill) for a in args]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"analysis: error: {captured.err.removeprefix('analysis: error: ')}"
    assert message.format(**fill) in captured.err and captured.err.count("\n") == 1 and not captured.out


def test_grouping_by_a_column_splits_the_settings(synthetic, capsys):
    assert main(["summary", str(synthetic), "--by", "seed"]) == 0
    printed = capsys.readouterr().out
    assert "fine-tuning LR medium, prior high, C_Tr 0, seed 0:" in printed
    assert "fine-tuning LR medium, prior high, C_Tr 0, seed 1:" in printed
