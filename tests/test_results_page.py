"""benchmarks/results_page.py: the page of measured results, written from workdirs with how each was made."""
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_store import Plant, write_store  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import results_page  # noqa: E402

PLANT = Plant(seeds=3, priors=("high",), lrs=("medium",), spurious=(0.0,))


def made_on(workdir: Path, isa: str) -> Path:
    """The manifest of `workdir` as `fttrace run` writes it on a machine generating `isa` code."""
    manifest = json.loads((workdir / "manifest.json").read_text())
    manifest.update(argv=["/venv/bin/fttrace", "run", "default", "--workdir", str(workdir)],
                    environment={"XLA_FLAGS": f"--xla_cpu_max_isa={isa}"}, git_commit="0123456789abcdef",
                    machine=dict(cpu="Some CPU", cores=2, isa="AVX2", xla_cpu_max_isa=isa),
                    invocations=[{"wall_s": 60.0}, {"wall_s": 5.0}], wall_s=5.0,
                    versions={"fttrace": "0.3.0", "jax": "0.10.2"})
    (workdir / "manifest.json").write_text(json.dumps(manifest))
    return workdir


def test_the_page_says_how_each_workdir_was_made_what_it_found_and_what_a_change_of_machine_flips(tmp_path):
    a = made_on(write_store(tmp_path / "avx2", PLANT, seed=0), "AVX2")
    b = made_on(write_store(tmp_path / "sse", PLANT, seed=1), "SSE4_2")
    out = tmp_path / "RESULTS.md"
    assert results_page.main([str(a), str(b), "--out", str(out), "--shared", str(b)]) == 0
    text = out.read_text()
    assert "## default: avx2\n" in text and "## default: sse\n" in text and "## default: avx2 against sse" in text
    assert f"- command: `XLA_FLAGS=--xla_cpu_max_isa=AVX2 fttrace run default --workdir {a}`" in text
    assert "- machine: Some CPU, 2 cores, AVX2; XLA code for SSE4_2; devices cpu:0" in text
    assert "- wall time: 1 min 05 s over 2 invocation(s) (status complete)\n" in text  # avx2: quiet
    assert "(status complete); other work shared the machine, so this is not its time" in text  # sse
    assert text.count("== The answer: what this run found ==") == 2  # each workdir's summary
    assert "verdicts" in text.split("against sse")[1]  # the comparison's verdict line


def test_a_folder_that_is_no_workdir_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=f"results_page: error: {tmp_path}: no manifest.json"):
        results_page.main([str(tmp_path), "--out", str(tmp_path / "RESULTS.md")])
