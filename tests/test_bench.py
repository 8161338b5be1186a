import json

import pytest

from fttrace import bench
from fttrace import config as config_lib
from fttrace.cli import main
from helpers import ROOT

BENCH = str(ROOT / "configs" / "bench.py")
QUICK = ["shape=tiny", "members=(1,2)", "steps=3", "repeats=1", "matmul_size=512"]
FIELDS = {"mode", "shape", "members", "member_steps_per_s", "tokens_per_s", "tflops", "mfu",
          "peak_mem_per_member_mb", "compile_s", "device"}


@pytest.fixture(scope="module")
def report():
    return bench.run_bench(config_lib.load(BENCH, QUICK + ["modes=('vmap','sequential')"]))


def test_library_reports_every_mode_at_every_member_count(report):
    assert [(r["mode"], r["members"]) for r in report["results"]] == [
        ("vmap", 1), ("sequential", 1), ("vmap", 2), ("sequential", 2)]
    for r in report["results"]:
        assert FIELDS <= set(r)
        assert r["shape"] == "tiny" and r["member_steps_per_s"] > 0 and r["compile_s"] > 0
        assert r["tokens_per_s"] == pytest.approx(r["member_steps_per_s"] * 8 * 16)
        assert r["tflops"] == pytest.approx(r["member_steps_per_s"] * report["flops_per_member_step"] / 1e12)
        assert 0 < r["mfu"] < 1 and r["peak_mem_per_member_mb"] > 0
    assert report["matmul_flops"] > 0 and json.loads(json.dumps(report)) == report


def test_flops_count_follows_the_shape():
    # tiny: 2 blocks (the last at the answer position only) + unembedding, x batch 8, x 3 for the backward pass.
    cfg = bench.setup_from_config(config_lib.load(BENCH, ["shape=tiny"])).model
    full_block = 2 * (32 * 32 * 16 + 2 * 32 * 32 * 16 + 2 * 16 * 16 * 32 + 32 * 32 * 16 + 2 * 32 * 128 * 16)
    last_block = 2 * (32 * 32 + 2 * 32 * 32 * 16 + 2 * 16 * 32 + 32 * 32 + 2 * 32 * 128)
    assert bench.train_flops(cfg, 8, 16) == 3 * 8 * (full_block + last_block + 2 * 32 * 16)


def test_cli_prints_the_table_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", BENCH, *[f"--config.{o}" for o in QUICK], "--config.members=(1,)",
                 "--config.modes=('vmap',)", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "member-steps/s" in table and "MFU" in table
    assert any(line.split()[:2] == ["vmap", "1"] for line in table.splitlines())
    results = json.loads(out.read_text())["results"]
    assert len(results) == 1 and FIELDS <= set(results[0])


@pytest.mark.parametrize("override, message", [
    ("shape=huge", "config key 'shape': unknown shape 'huge'; known: ref, large, small, tiny"),
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
