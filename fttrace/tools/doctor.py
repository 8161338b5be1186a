"""`fttrace doctor`: what this environment lacks to run fttrace, without installing anything.

Every requirement of fttrace and of its extras, with the installed version ("missing" where there is none), the
range fttrace supports and the extra that brings it; then the backend and devices JAX sees. The requirements are
read, never written twice: from the installed distribution's metadata when that distribution is the fttrace being
run, else from the pyproject.toml of the source checkout it is run from (an editable install made before the
pyproject changed keeps the old metadata). For environments where nothing can be fetched: install with
`pip install --no-deps --no-build-isolation -e .`, then ask this what is still missing.
"""
from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import pathlib
import re
import sys
import tomllib
import urllib.parse
import urllib.request

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

import fttrace
from fttrace.errors import UserError

NAME = "fttrace"


@dataclasses.dataclass
class Check:
    """One requirement against the environment: `extras` is empty for the core."""
    name: str
    specifier: str
    extras: list[str]
    version: str | None  # installed; None: missing

    @property
    def in_range(self) -> bool:
        if self.version is None:
            return False
        try:
            return Requirement(f"{self.name}{self.specifier}").specifier.contains(Version(self.version),
                                                                                prereleases=True)
        except InvalidVersion:
            return False

    @property
    def state(self) -> str:
        if self.version is None:
            return "MISSING" if not self.extras else "missing"
        return "ok" if self.in_range else f"outside {self.specifier}"


def installed(name: str) -> str | None:
    """The installed version of distribution `name`, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _package_root() -> pathlib.Path:
    return pathlib.Path(fttrace.__file__).resolve().parent


def _is_this_fttrace(dist: importlib.metadata.Distribution) -> bool:
    """Whether `dist` installed the fttrace package being run (a wheel's files, or an editable install's source)."""
    if dist.locate_file(f"{NAME}/__init__.py").resolve() == _package_root() / "__init__.py":
        return True
    direct = json.loads(dist.read_text("direct_url.json") or "{}")  # PEP 610: where an editable install points
    url = urllib.parse.urlparse(direct.get("url", ""))
    return bool(direct.get("dir_info", {}).get("editable")) and url.scheme == "file" \
        and pathlib.Path(urllib.request.url2pathname(url.path)).resolve() == _package_root().parent


def _pyproject_requirements(pyproject: pathlib.Path) -> list[str]:
    """A pyproject's requirements as metadata writes them (`...; extra == "x"` for an extra's)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    found = list(project.get("dependencies", []))
    for extra, items in project.get("optional-dependencies", {}).items():
        found += [f'{item}; extra == "{extra}"' for item in items]
    return found


def requirements() -> tuple[list[str], str]:
    """fttrace's requirement strings, and where they were read."""
    try:
        dist = importlib.metadata.distribution(NAME)
        if _is_this_fttrace(dist):
            return list(dist.requires or []), f"the installed distribution {NAME} {dist.version}"
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = _package_root().parent / "pyproject.toml"
    if pyproject.is_file():
        return _pyproject_requirements(pyproject), f"{pyproject} (a source checkout)"
    raise UserError(f"no metadata for the fttrace at {_package_root()}: neither installed nor in a checkout")


def _selected_by(requirement: Requirement) -> list[str]:
    """The extras that bring `requirement` on this platform ("" for the core; [] where its marker excludes it)."""
    if requirement.marker is None:
        return [""]
    environment = default_environment()
    named = re.findall(r'extra == "([^"]+)"', str(requirement.marker))
    return [extra for extra in ["", *named] if requirement.marker.evaluate({**environment, "extra": extra})]


def checks(lines: list[str], version=None) -> list[Check]:
    """One Check per package that fttrace or one of its extras requires, core first. An extra that names fttrace
    itself ([all], [dev]) is not listed: the packages it brings are, under the extras that name them."""
    core, optional = {}, {}
    for requirement in map(Requirement, lines):
        key = canonicalize_name(requirement.name)
        if key == NAME:
            continue
        for extra in _selected_by(requirement):
            into = core if extra == "" else optional
            entry = into.setdefault(key, Check(requirement.name, str(requirement.specifier), [], None))
            if extra:
                entry.extras.append(extra)
    found = list(core.values()) + [c for key, c in optional.items() if key not in core]
    for c in found:
        c.version = (version or installed)(c.name)
    return found


def jax_line() -> str:
    """The backend and devices JAX sees, or why it cannot say."""
    try:
        import jax
        devices = jax.devices()
    except Exception as e:  # noqa: BLE001 -- a broken JAX install is what this command is for
        return f"jax: cannot start ({type(e).__name__}: {e})"
    kinds: dict[str, int] = {}
    for device in devices:
        kinds[device.device_kind] = kinds.get(device.device_kind, 0) + 1
    shown = ", ".join(f"{n} x {kind}" for kind, n in kinds.items())
    return f"jax {jax.__version__}: backend {jax.default_backend()}, {len(devices)} device(s): {shown}"


def report(lines: list[str], source: str, version=None, out=None) -> int:
    """Prints the checks and JAX's devices (to `out`, default stdout); 0 when every core requirement is installed in
    its range, else 1."""
    out, version = out or sys.stdout, version or installed
    found = checks(lines, version)
    print(f"fttrace {fttrace.__version__} at {_package_root()}, Python {sys.version.split()[0]}", file=out)
    print(f"requirements from {source}", file=out)
    width = max(len(c.name) for c in found)
    for title, group in (("core", [c for c in found if not c.extras]), ("extras", [c for c in found if c.extras])):
        print(f"{title}:", file=out)
        for c in group:
            brought = f"  [{', '.join(c.extras)}]" if c.extras else ""
            print(f"  {c.name:<{width}}  {c.version or 'missing':<12} {c.specifier:<14} {c.state}{brought}", file=out)
    broken = [c for c in found if not c.extras and not c.in_range]
    print(jax_line() if version("jax") else "jax: not installed", file=out)
    if broken:
        print("core incomplete: " + ", ".join(f"{c.name} ({c.version or 'missing'})" for c in broken), file=out)
        return 1
    print("core complete", file=out)
    return 0
