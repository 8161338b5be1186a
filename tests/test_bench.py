import json

import numpy as np
import pytest

from fttrace.bench import throughput as bench, compaction as bench_compaction
from fttrace import config as config_lib
from fttrace.cli import main
from helpers import ROOT

BENCH = str(ROOT / "configs" / "bench.py")
QUICK = ["shape=tiny", "members=(1,2)", "steps=3", "repeats=1", "matmul_size=512"]
FIELDS = {"mode", "work", "shape", "members", "member_steps_per_s", "tokens_per_s", "tflops", "mfu",
          "peak_mem_per_member_mb", "compile_s", "device", "roofline", "flops_per_member_step"}


@pytest.fixture(scope="module")
def report():
    return bench.run_bench(config_lib.load(BENCH, QUICK + ["modes=('vmap','vmap_full','sequential')"]))


@pytest.mark.slow
def test_library_reports_every_mode_at_every_member_count(report):
    assert [(r["mode"], r["members"]) for r in report["results"]] == [
        ("vmap", 1), ("vmap_full", 1), ("sequential", 1), ("vmap", 2), ("vmap_full", 2), ("sequential", 2)]
    for r in report["results"]:
        assert FIELDS <= set(r)
        assert r["shape"] == "tiny" and r["member_steps_per_s"] > 0 and r["compile_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["member_steps_per_s"] * 8 * 16)
        assert r["tflops"] == pytest.approx(r["member_steps_per_s"] * r["flops_per_member_step"] / 1e12)
        assert 0 < r["mfu"] < 1 and r["peak_mem_per_member_mb"] > 0
    assert report["matmul_flops"] > 0 and json.loads(json.dumps(report)) == report


@pytest.mark.slow
def test_each_row_names_its_work_and_the_full_forward_is_the_torch_loops(report):
    """The answer-only forward and the full forward (a plain loop's work) are separate rows, counted and costed
    apart: the full one does more FLOPs by our count and by XLA's."""
    work = {r["mode"]: r["work"] for r in report["results"]}
    assert work == {"vmap": "answer position only", "sequential": "answer position only",
                    "vmap_full": "every position, last read"}
    assert work["vmap_full"] == bench.WORK["answer"]["torch"]
    flops = {r["mode"]: r["flops_per_member_step"] for r in report["results"]}
    assert flops["vmap_full"] > flops["vmap"] == flops["sequential"]
    lines = report["rooflines"]
    assert set(lines) == {"answer position only", "every position, last read"}
    assert lines["every position, last read"]["xla_flops"] > lines["answer position only"]["xla_flops"] > 0
    for line in lines.values():
        assert line["intensity"] > 0 and 0 < line["device_compute_bound"] < line["h100_bound"]


@pytest.mark.slow
def test_the_language_model_step_is_benchmarked_at_every_position():
    overrides = QUICK + ["members=(2,)", "modes=('vmap','sequential')", "objective=lm"]
    lm = bench.run_bench(config_lib.load(BENCH, overrides))
    assert {r["work"] for r in lm["results"]} == {"next token at every position"}
    cfg = bench.setup_from_config(config_lib.load(BENCH, ["shape=tiny"])).model
    assert {r["flops_per_member_step"] for r in lm["results"]} == {bench.train_flops(cfg, 8, 16, every_position=True)}
    assert all(r["member_steps_per_s"] > 0 and r["roofline"]["xla_flops"] > 0 for r in lm["results"])


def test_the_torch_loop_runs_and_compares_like_for_like():
    pytest.importorskip("torch", reason="the torch mode needs pip install 'fttrace[torch]'")
    report = bench.run_bench(config_lib.load(BENCH, QUICK + ["members=(2,)", "modes=('vmap','vmap_full','torch')"]))
    rows = {r["mode"]: r for r in report["results"]}
    assert rows["torch"]["member_steps_per_s"] > 0 and rows["torch"]["speedup_vs_torch"] == pytest.approx(1.0)
    assert rows["vmap_full"]["same_work_as_torch"] and not rows["vmap"]["same_work_as_torch"]
    assert "* does less work than the torch loop" in bench.format_table(report)


def test_the_torch_loops_lm_loss_reads_every_position():
    torch = pytest.importorskip("torch", reason="the torch mode needs pip install 'fttrace[torch]'")
    from fttrace.bench import torch_baseline as bench_torch
    cross_entropy = torch.nn.functional.cross_entropy
    for objective in ("answer", "lm"):
        config = config_lib.load(BENCH, QUICK + [f"objective={objective}", "modes=('vmap',)"])
        setup = bench.setup_from_config(config)
        runner = bench_torch.TorchRunner(setup, 1)
        model = runner._build(0)[0]
        draws = torch.randint(0, setup.model.vocab_size, (4, setup.context + 1),
                              generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            loss, logits = float(runner.objective_loss(model, draws)), model(draws[:, :-1])
            last = float(cross_entropy(logits[:, -1], draws[:, -1]))
            every = float(cross_entropy(logits.flatten(0, 1), draws[:, 1:].flatten()))
        assert abs(last - every) > 1e-3
        assert loss == pytest.approx(every if objective == "lm" else last, rel=1e-6)


def test_flops_count_follows_the_shape():
    # tiny: 2 blocks (the last at the answer position only) + unembedding, x batch 8, x 3 for the backward pass.
    cfg = bench.setup_from_config(config_lib.load(BENCH, ["shape=tiny"])).model
    full_block = 2 * (32 * 32 * 16 + 2 * 32 * 32 * 16 + 2 * 16 * 16 * 32 + 32 * 32 * 16 + 2 * 32 * 128 * 16)
    last_block = 2 * (32 * 32 + 2 * 32 * 32 * 16 + 2 * 16 * 32 + 32 * 32 + 2 * 32 * 128)
    assert bench.train_flops(cfg, 8, 16) == 3 * 8 * (full_block + last_block + 2 * 32 * 16)
    # every position (an LM loss, or a plain loop that reads the last): the last block and the unembedding everywhere
    assert bench.train_flops(cfg, 8, 16, every_position=True) == 3 * 8 * (2 * full_block + 2 * 32 * 16 * 16)


def test_the_decoder_is_benchmarked_and_every_mode_samples_the_same_tokens(tmp_path, capsys):
    out = tmp_path / "decode.json"
    overrides = ["shape=tiny", "members=(2,)", "repeats=1", "objective=decode", "decode.prompts=3",
                 "decode.prompt_length=4"]
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "sampled tokens/s" in table
    report = json.loads(out.read_text())
    assert [r["mode"] for r in report["results"]] == ["vmap", "vmap_whole_cache", "sequential"]
    for r in report["results"]:
        assert r["same_samples"] and r["sampled_tokens_per_s"] > 0 and r["new_tokens"] == 12
        assert 0 < r["written_tokens"] <= 2 * 3 * 12
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--config.decode.prompt_length=16"]) == 2
    assert "config key 'decode.prompt_length': 16 leaves no room" in capsys.readouterr().err
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--config.decode.modes=('torch',)"]) == 2
    assert "config key 'decode.modes': unknown mode(s) ['torch']" in capsys.readouterr().err


@pytest.mark.slow
def test_compaction_is_benchmarked_with_the_same_results_in_both_modes(tmp_path, capsys):
    """Training member batches of 2, evaluation batches of 8: 12 of 16 members stopped leave a member axis of 8."""
    out = tmp_path / "compaction.json"
    overrides = ["shape=tiny", "members=(16,)", "repeats=1", "steps=4", "objective=compaction",
                 "compaction.stopped=(0.0,0.75)", "compaction.chunks=2", "compaction.examples=16",
                 "pretrain.member_batch=2"]
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--out", str(out)]) == 0
    assert "training member-steps/s" in capsys.readouterr().out
    rows = {(r["mode"], r["stopped"]): r for r in json.loads(out.read_text())["results"]}
    assert set(rows) == {(m, s) for m in bench_compaction.MODES for s in (0, 12)}
    assert rows["full", 12]["widths"] == [16, 16] and rows["compact", 12]["widths"] == [8, 8]
    assert rows["compact", 0]["widths"] == [16, 16]
    assert all(r["same_results"] and r["training"] == 16 - r["stopped"] for r in rows.values())
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--config.compaction.chunks=3"]) == 2
    assert "config key 'compaction.chunks': must divide steps (4), got 3" in capsys.readouterr().err
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--config.compaction.stopped=(1.0,)"]) == 2
    assert "config key 'compaction.stopped'" in capsys.readouterr().err
    assert main(["bench", BENCH, *[f"--config.{o}" for o in overrides], "--config.data=task"]) == 2
    assert "config key 'data': the compaction bench trains on random tokens" in capsys.readouterr().err


def test_compaction_bench_tells_different_results_apart():
    from types import SimpleNamespace
    run = lambda loss, w: SimpleNamespace(records=[(0, {"loss": np.array([loss, np.nan])})],  # noqa: E731
                                          final={"w": np.array([w])})
    assert bench_compaction.same_results(run(1.0, 2.0), run(1.0, 2.0))  # NaN equals NaN
    assert not bench_compaction.same_results(run(1.0, 2.0), run(1.5, 2.0))
    assert not bench_compaction.same_results(run(1.0, 2.0), run(1.0, 2.5))


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", BENCH, *[f"--config.{o}" for o in QUICK], "--config.members=(1,)",
                 "--config.modes=('vmap',)", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "member-steps/s" in table and "MFU" in table and "roofline (answer position only)" in table
    assert any(line.split()[:4] == ["vmap", "answer", "position", "only"] for line in table.splitlines())
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1 and FIELDS <= set(results[0])


@pytest.mark.parametrize("override, message", [
    ("shape=huge", "config key 'shape': unknown shape 'huge'; known: ref, large, small, tiny, stories"),
    ("objective=words", "config key 'objective': must be one of answer, lm, decode"),
    ("objective=lm", "the LM objective computes every position in every mode (no vmap_full)"),
    ("members=(0,4)", "config key 'members'"),
    ("modes=('jit',)", "config key 'modes': unknown mode"),
    ("model.layer_norm=False", "the torch loop mirrors the default architecture only"),
])
def test_bad_bench_config_is_refused(tmp_path, capsys, override, message):
    out = tmp_path / "bench.json"
    assert main(["bench", BENCH, f"--config.{override}", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_bad_shape_is_refused_by_the_library():
    with pytest.raises(bench.UserError, match="unknown shape 'huge'"):
        bench.run_bench(config_lib.load(BENCH, ["shape=huge"]))
