"""The analysis package runs without JAX or the fttrace engine: a laptop with the results is enough."""
import subprocess
import sys

from helpers import ROOT

ENGINE = ("jax", "jaxlib", "flax", "optax", "orbax", "chex", "fttrace")

SCRIPT = f"""
import sys

ENGINE = {ENGINE!r}


class RefuseEngine:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ENGINE:
            raise ImportError("analysis must not import " + name)
        return None


sys.meta_path.insert(0, RefuseEngine())
sys.path.insert(0, {str(ROOT / "tests")!r})
from synthetic_store import Plant, write_store
from analysis.cli import main

workdir = sys.argv[1]
store = write_store(workdir + "/store", Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,)))
assert main(["summary", str(store)]) == 0
assert main(["report", str(store), "--out", workdir + "/report"]) == 0
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ENGINE)
assert not loaded, loaded
print("engine-free")
"""


def test_analysis_runs_with_the_engine_unimportable(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("engine-free")
    assert (tmp_path / "report" / "index.html").exists()
