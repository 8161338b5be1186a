"""fttrace: sweeps of tiny transformers, vmapped over members, to study what fine-tuning does to capabilities."""
import importlib.metadata

try:
    __version__ = importlib.metadata.version("fttrace")
except importlib.metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+source"
