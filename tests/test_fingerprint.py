"""Results fingerprints: the smoke study (tiny form, every evaluation), the stories and the canary studies (tiny
forms) give, bit for bit, the results stored in `tests/fingerprints.json`.

A refactoring that changes no computation keeps them; a change that moves any logged value changes them, and then
`python tests/test_fingerprint.py --write` records the new ones (say why in the commit). The runs generate AVX2 code
(`--xla_cpu_max_isa=AVX2`), so AVX-512 and AVX2-only CPUs compute the same floats; other architectures skip.
"""
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
STORE = Path(__file__).with_name("fingerprints.json")
sys.path.insert(0, str(Path(__file__).parent))
from helpers import SMOKE, TINY  # noqa: E402

pytestmark = pytest.mark.slow  # CI's slow lane: python -m pytest -m slow

STUDIES = {
    "smoke_tiny": [SMOKE, *(f"--config.{o}" for o in TINY)],
    "stories_tiny": [str(ROOT / "configs" / "stories_twist.py") + ":tiny"],
    "canary_tiny": [str(ROOT / "configs" / "canary_unlock.py") + ":tiny"],
}
ISA = "--xla_cpu_max_isa=AVX2"


def fingerprint(workdir: Path) -> str:
    """SHA-256 of a workdir's results: every row, sorted, its values' exact bits (the row order and the writing
    process's column order do not count)."""
    frame = pd.read_parquet(workdir / "results.parquet")
    frame = frame[sorted(frame.columns)]
    keys = [c for c in ("phase", "member", "step", "metric") if c in frame.columns]
    frame = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    digest = hashlib.sha256(",".join(frame.columns).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def run_study(name: str, where: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env.update(XLA_FLAGS=ISA, FTTRACE_COMPILATION_CACHE=str(where / "xla-cache"))
    workdir = where / name
    done = subprocess.run([sys.executable, "-m", "fttrace.cli", "run", *STUDIES[name], "--workdir", str(workdir),
                           "-q"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return fingerprint(workdir)


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="fingerprints are of x86-64 AVX2 code")
@pytest.mark.parametrize("name", sorted(STUDIES))
def test_results_are_bit_identical_to_the_stored_fingerprint(name, tmp_path):
    if name != "smoke_tiny":
        pytest.importorskip("sentencepiece")
    stored = json.loads(STORE.read_text())
    assert run_study(name, tmp_path) == stored[name], f"{name}: results changed (see this file's docstring)"


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    with tempfile.TemporaryDirectory() as tmp:
        prints = {name: run_study(name, Path(tmp)) for name in sorted(STUDIES)}
    STORE.write_text(json.dumps(prints, indent=1, sort_keys=True) + "\n")
    print(json.dumps(prints, indent=1))
