"""Installing fttrace where it will run: `fttrace doctor` names what an environment lacks, the bundled configs are
found by name, and a built wheel carries them (run from a folder outside the checkout)."""
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

from fttrace import cli, config as config_lib
from fttrace.errors import UserError
from fttrace.tools import doctor
from helpers import ROOT

REQUIRES = ['jax>=0.10.1', 'ml-collections>=1.0.0', 'tracr-pypi>=1.0.0; extra == "tracr"',
            'tensorboard>=2.16; extra == "tensorboard"', 'tensorboard>=2.16; extra == "test"',
            'fttrace[tracr,tensorboard]; extra == "all"', 'pywin32>=300; sys_platform == "win32"']


def versions(**installed):
    return lambda name: installed.get(name.replace("-", "_"))


def test_doctor_names_each_package_its_range_and_the_extra_that_brings_it():
    found = {c.name: c for c in doctor.checks(REQUIRES, versions(jax="0.12.1", ml_collections="1.1.0"))}
    assert set(found) == {"jax", "ml-collections", "tracr-pypi", "tensorboard"}  # no fttrace[...], no win32 package
    assert found["jax"].extras == [] and found["jax"].state == "ok"
    assert found["tracr-pypi"].extras == ["tracr"] and found["tracr-pypi"].state == "missing"
    assert found["tensorboard"].extras == ["tensorboard", "test"]
    out = io.StringIO()
    assert doctor.report(REQUIRES, "a test", versions(jax="0.12.1", ml_collections="1.1.0"), out) == 0
    shown = out.getvalue()
    assert "tracr-pypi" in shown and "[tracr]" in shown and "core complete" in shown
    assert "backend cpu" in shown  # the backend and devices JAX sees


def test_doctor_fails_on_a_missing_or_too_old_core_package():
    out = io.StringIO()
    assert doctor.report(REQUIRES, "a test", versions(jax="0.12.1"), out) == 1
    assert "core incomplete: ml-collections (missing)" in out.getvalue()
    out = io.StringIO()
    assert doctor.report(REQUIRES, "a test", versions(jax="0.9.0", ml_collections="1.1.0"), out) == 1
    assert "outside >=0.10.1" in out.getvalue() and "core incomplete: jax (0.9.0)" in out.getvalue()


def test_fttrace_doctor_reads_this_checkouts_requirements(monkeypatch, capsys):
    assert cli.main(["doctor"]) == 0
    shown = capsys.readouterr().out
    assert "core complete" in shown and "backend cpu" in shown
    assert f"requirements from {ROOT / 'pyproject.toml'}" in shown or "the installed distribution" in shown
    real = doctor.installed
    monkeypatch.setattr(doctor, "installed", lambda name: None if name == "ml-collections" else real(name))
    assert cli.main(["doctor"]) == 1  # a required package missing
    assert re.search(r"ml-collections +missing", capsys.readouterr().out)


def test_doctor_takes_an_editable_installs_metadata_only_where_it_points_here(tmp_path):
    for name, source in (("here", ROOT), ("elsewhere", tmp_path)):
        info = tmp_path / name / "fttrace-0.3.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fttrace\nVersion: 0.3.0\n")
        (info / "direct_url.json").write_text(json.dumps({"url": source.as_uri(), "dir_info": {"editable": True}}))
        assert doctor._is_this_fttrace(importlib.metadata.PathDistribution(info)) == (name == "here")


def test_bundled_configs_are_found_by_name_and_a_path_still_wins(tmp_path, monkeypatch):
    by_path = config_lib.load(str(ROOT / "configs/pcfg_counter.py:small"))
    assert config_lib.to_json(config_lib.load("pcfg_counter:small")) == config_lib.to_json(by_path)
    assert config_lib.locate("default.py") == config_lib.CONFIGS_DIR / "default.py"
    monkeypatch.chdir(tmp_path)
    for spec in ("default", "default.py"):  # the file in the working directory, not the bundled one
        (tmp_path / spec).write_text("def get_config():\n    return 1\n")
        with pytest.raises(UserError, match=f"config file {spec}: get_config.. must return"):
            config_lib.load(spec)
    with pytest.raises(UserError, match=r"config file not found: nowhere \(bundled configs: bench, .*default"):
        config_lib.load("nowhere")
    with pytest.raises(UserError, match="config file not found: tracr_common"):  # a sibling module, not a config
        config_lib.load("tracr_common")


@pytest.mark.slow
def test_a_built_wheel_carries_the_configs_and_runs_outside_the_checkout(tmp_path):
    source = tmp_path / "source"  # built from a copy: the build leaves build/ and *.egg-info behind
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for part in ("fttrace", "analysis"):
        shutil.copytree(ROOT / part, source / part, ignore=skip)
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / part, source / part)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "wheel", source],
                   check=True, capture_output=True)
    wheel, = (tmp_path / "wheel").glob("fttrace-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", tmp_path / "site", wheel], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}

    def fttrace(*args):
        return subprocess.run([sys.executable, "-m", "fttrace", *args], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)
    shown = fttrace("run", "--help").stdout
    assert "\n  default\n" in shown and "\n  pcfg_counter\n" in shown and ":small" in shown
    done = fttrace("config", "default")  # default.py imports its sibling pcfg_counter.py
    assert done.returncode == 0, done.stderr
    assert '"seeds": 12' in done.stdout
    done = fttrace("doctor")
    assert f"at {tmp_path / 'site' / 'fttrace'}" in done.stdout  # the wheel's fttrace, not the checkout's
    assert "requirements from the installed distribution fttrace" in done.stdout
    # The report's templates travel with the analysis package.
    assert {p.name for p in (tmp_path / "site" / "analysis" / "templates").iterdir()} >= {"report.html", "style.css"}
