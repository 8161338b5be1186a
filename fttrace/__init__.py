"""fttrace: sweeps of tiny transformers, vmapped over members, to study what fine-tuning does to capabilities."""
from fttrace.version import __version__  # noqa: F401


def open(workdir):  # noqa: A001 -- fttrace.open(workdir), as a notebook writes it
    """The study in `workdir` opened for reading: a `fttrace.tools.workdir.Run` (its config, members, results and any
    member's model)."""
    from fttrace.tools.workdir import Run
    return Run(workdir)
