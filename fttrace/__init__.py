"""fttrace: sweeps of tiny transformers, vmapped over members, to study what fine-tuning does to capabilities."""
import importlib.metadata

try:
    __version__ = importlib.metadata.version("fttrace")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+source"


def open(workdir):  # noqa: A001 -- fttrace.open(workdir), as a notebook writes it
    """The study in `workdir` opened for reading: a `fttrace.workdir.Run` (its config, members, results and any
    member's model)."""
    from fttrace.workdir import Run
    return Run(workdir)
