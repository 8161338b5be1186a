import os
import shutil
import tempfile

import pytest

_SESSION_CACHE = []


def pytest_configure(config):
    """One persistent compilation cache for the session (a fresh temporary directory, removed at the end), so that
    tests that build the same small programs compile them once; subprocesses and in-process `fttrace run` calls
    share it. Set here, before anything compiles: JAX decides at its first compilation whether it uses a cache.
    A FTTRACE_COMPILATION_CACHE set by the caller wins ("off": compile everything afresh); the worker processes of
    `pytest -n` inherit the session's from the controlling process and enable it too."""
    if "FTTRACE_COMPILATION_CACHE" not in os.environ:
        where = tempfile.mkdtemp(prefix="fttrace-test-xla-")
        _SESSION_CACHE.append(where)
        os.environ["FTTRACE_COMPILATION_CACHE"] = where
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # cache even the small programs
    from fttrace.cli import enable_compilation_cache
    enable_compilation_cache()


def pytest_unconfigure(config):
    for where in _SESSION_CACHE:
        shutil.rmtree(where, ignore_errors=True)


def _has_gpu() -> bool:
    import jax
    return any(d.platform == "gpu" for d in jax.devices())


def pytest_collection_modifyitems(config, items):
    if any(item.get_closest_marker("gpu") for item in items) and not _has_gpu():
        skip = pytest.mark.skip(reason="needs a GPU")
        for item in items:
            if item.get_closest_marker("gpu"):
                item.add_marker(skip)


@pytest.fixture
def running_store(tmp_path):
    """A store caught mid-run (tests/helpers.py, write_running_store): pretraining finished, fine-tuning live."""
    from helpers import write_running_store
    return write_running_store(tmp_path / "run")
