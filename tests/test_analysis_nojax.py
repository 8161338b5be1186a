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


def _analysis_imports(path) -> set[str]:
    """The analysis modules a module imports, at its top or inside functions."""
    import ast
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "analysis":
            if node.module == "analysis":
                found |= {f"analysis.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "analysis"}
    return found


def test_the_package_has_no_import_cycle():
    modules = {f"analysis.{p.stem}": p for p in (ROOT / "analysis").glob("*.py") if p.stem != "__main__"}
    graph = {name: {m for m in _analysis_imports(path) if m in modules and m != name} for name, path in modules.items()}
    graph["analysis.__init__"] = set()
    done, path = set(), []

    def visit(name):
        assert name not in path, "import cycle: " + " -> ".join(path[path.index(name):] + [name])
        if name in done:
            return
        path.append(name)
        for other in graph.get(name, ()):
            visit(other)
        path.pop()
        done.add(name)
    for name in graph:
        visit(name)
    assert "analysis.wrapper" not in modules
