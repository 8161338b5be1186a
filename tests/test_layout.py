"""The layout: few modules at the top, imports only downward between layers, and README's Layout section naming
exactly the tree's folders and top-level modules."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fttrace"

# Layers, lowest first: a module may import its own layer and the ones below, never one above.
LAYERS = [
    {"fttrace", "fttrace.errors", "fttrace.version", "fttrace.config"},
    {"fttrace.model"},
    {"fttrace.engine"},
    {"fttrace.answer", "fttrace.lm"},
    {"fttrace.stories", "fttrace.canary"},
    {"fttrace.tools", "fttrace.bench"},
    {"fttrace.cli", "fttrace.__main__", "fttrace.configs"},  # the bundled configs: package data, read by name
]
# Upward imports still in the code (the test fails on any other, and on one listed here that is gone, so this list
# only shrinks). `fttrace.config` reaches each study kind's own checks by module name (STUDY_KINDS, TASK_VALIDATE),
# never by an import.
KNOWN_UPWARD = {
    ("fttrace", "fttrace.tools.workdir"),  # fttrace.open, imported when called
}


def unit(module: str) -> str:
    """The layer unit a module belongs to: its top-level folder under fttrace, or the top-level module itself."""
    parts = module.split(".")
    return ".".join(parts[:2])


def rank(module: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if unit(module) in layer)


def module_name(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def imports(path: Path):
    """Every fttrace module `path` imports, at any depth of the file (function-level imports included)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.startswith("fttrace"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fttrace"):
            for a in node.names:  # `from fttrace.engine import train` names a module; `from x import f` a function
                full = f"{node.module}.{a.name}"
                yield full if (ROOT / Path(*full.split("."))).with_suffix(".py").exists() else node.module


def test_at_most_six_modules_directly_under_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top


def test_every_module_belongs_to_a_layer():
    for path in PACKAGE.rglob("*.py"):
        rank(module_name(path))  # StopIteration names a module no layer holds


def test_no_upward_imports():
    upward = set()
    for path in PACKAGE.rglob("*.py"):
        me = module_name(path)
        for other in imports(path):
            if rank(other) > rank(me):
                upward.add((me, other))
    assert upward - KNOWN_UPWARD == set(), "imports from a higher layer"
    assert KNOWN_UPWARD - upward == set(), "gone: remove from KNOWN_UPWARD"


def test_readme_layout_names_the_tree():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Layout"):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    named = set(re.findall(r"^(fttrace/[\w/]+?/?)(?:\.py)?\s", block, re.M))
    folders = {f"fttrace/{p.parent.relative_to(PACKAGE).as_posix()}/" for p in PACKAGE.rglob("__init__.py")
               if p.parent != PACKAGE}
    folders |= {f"fttrace/{p.stem}" for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    # a top-level module may be named inside another's line ("errors.py ...; version.py: ...")
    mentioned = {f for f in folders if f in named or f.removeprefix("fttrace/") + ".py" in block}
    assert mentioned == folders, sorted(folders - mentioned)
    for entry in named:
        assert (ROOT / entry).exists() or (ROOT / (entry + ".py")).exists(), entry
