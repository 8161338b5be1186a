"""The analysis installed alone (`pip install ./analysis`, no JAX in the environment) reads a store and renders its
summary and report."""
import importlib.util
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
assert importlib.util.find_spec("jax") is None, "this environment must not have JAX"
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic store writer (numpy and pandas only)
from synthetic_store import Plant, write_store  # noqa: E402

from analysis.cli import main  # noqa: E402

with tempfile.TemporaryDirectory() as work:
    store = write_store(f"{work}/store", Plant(seeds=3, priors=("high",), lrs=("medium", "large"), spurious=(0.0,)))
    assert main(["summary", str(store)]) == 0
    assert main(["report", str(store), "--out", f"{work}/report"]) == 0
    assert (pathlib.Path(work) / "report" / "index.html").exists()
print("analysis alone: summary and report rendered without JAX")
