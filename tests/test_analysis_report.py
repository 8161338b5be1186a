"""The report and the terminal summary of a study in the engine's schema, and the command's errors."""
import html
import re

import pytest

from analysis.cli import main
from synthetic_store import Plant, build_frame, write_store

SECTIONS = ("answer", "glossary", "regime", "taxonomy", "claims", "survival", "instruments", "figures", "nulls", "members", "config",
            "manifest")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    plant = Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,),
                  kind=lambda lr, prior, s: "wrapper" if lr == "medium" else "overwrite")
    return write_store(tmp_path_factory.mktemp("analysis") / "run", plant)


def test_the_report_opens_with_the_answer_and_holds_every_section(store, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", str(store), "--out", str(out)]) == 0
    assert str(out / "index.html") in capsys.readouterr().out
    page = (out / "index.html").read_text()
    starts = [page.index(f'<section id="{name}"') for name in SECTIONS]
    assert starts == sorted(starts)
    assert "Regime: what the models can do, before any verdict" in page
    answer = page[page.index('<section id="answer"'):page.index('<section id="glossary"')]
    assert "hidden wrapper" in answer and "50% [17%, 83%]" in answer and "untestable at this n" in answer
    assert "claims 1, 2, 3, 4a, 4b, 4c: untestable with these seeds" in answer
    glossary = page[page.index('<section id="glossary"'):page.index('<section id="regime"')]
    assert all(f"<dt>{term}</dt>" in glossary for term in ("C_PT", "C_FT", "C_Te", "C_Tr", "O_PT", "O_FT",
                                                           "operand-blind", "T_prune", "T_reft", "SESOI", "Holm"))
    assert '<td class="ci">0.94 [0.92, 0.96]</td>' in page and ".ci, td.ci { white-space: nowrap; }" in page
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


def test_the_summary_opens_with_the_answer_and_fits_120_columns(store, capsys, tmp_path):
    assert main(["summary", str(store), "--csv", str(tmp_path / "tables")]) == 0
    printed = capsys.readouterr().out
    assert "3 pretrained, 6 fine-tuned, 6 reverse-fine-tuned, 3 control members over 3 seed(s)" in printed
    titles = ["== The answer", "== Glossary", "== Regime", "== What fine-tuning did to C_PT", "== Claims",
              "== Survival of reFT", "== Instruments against their nulls", "== Nulls and parameters"]
    at = [printed.index(t) for t in titles]
    assert at == sorted(at) and printed.index("== ") == at[0]
    answer = printed[at[0]:at[1]]
    assert re.search(r"hidden wrapper +3/6 +50% \[17%, 83%\]", answer)
    assert re.search(r" 1  untestable at this n  \+0.518 \[", answer) and "Flags:" in answer
    glossary = printed[at[1]:at[2]]
    assert all(f"  {term}: " in glossary for term in ("C_PT", "C_FT", "C_Te", "C_Tr", "O_PT", "O_FT", "operand-blind",
                                                      "T_prune", "T_reft", "SESOI", "Holm"))
    assert "fine-tuning LR medium, prior high, C_Tr 0: HIDDEN WRAPPER" in printed
    assert "fine-tuning LR large, prior high, C_Tr 0: OVERWRITE" in printed
    assert "power " in printed and "T_prune = " in printed
    wide = [line for line in printed.splitlines() if len(line) > 120]
    assert not wide, wide
    # The full-width tables go to CSV.
    cells = (tmp_path / "tables" / "regime_cells.csv").read_text().splitlines()
    assert "O_FT queries answered with" in cells[0] and len(cells) == 3
    assert f"tables: {len(list((tmp_path / 'tables').glob('*.csv')))} CSV files in" in printed


def test_a_run_in_progress_gets_a_report_of_what_it_has(tmp_path):
    plant = Plant(seeds=2, priors=("high",), lrs=("medium",), spurious=(0.0,))
    frame = build_frame(plant)
    run = write_store(tmp_path / "run", plant, frame=frame[frame.phase == "pretrain"], status="running")
    assert main(["report", str(run), "--out", str(tmp_path / "report")]) == 0
    page = (tmp_path / "report" / "index.html").read_text()
    assert "run status 'running'" in html.unescape(page) and "cannot be shown yet" in page
    assert "No fine-tuned member could be judged (no fine-tuned members)." in page
    assert "Training curves per phase" in page and "Not drawn (no data in the store)" in page


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("small") / "run", Plant(seeds=2, priors=("high",), lrs=("medium",),
                                                                      spurious=(0.0,)))


@pytest.mark.parametrize("args, message", [
    (["summary", "{tmp}/nowhere"], "{tmp}/nowhere: no such directory"),
    (["summary", "gs://bucket/run"], "gs://bucket/run: the analysis reads a workdir on this machine; copy it here "
                                     "first (e.g. `gcloud storage cp -r gs://bucket/run .`)"),
    (["compare", "{store}", "s3://bucket/run"], "s3://bucket/run: the analysis reads a workdir on this machine"),
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
