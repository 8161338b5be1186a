"""fttrace's version: the installed distribution's, or "0+source" in a source tree that was never installed."""
import importlib.metadata

try:
    __version__ = importlib.metadata.version("fttrace")
except importlib.metadata.PackageNotFoundError:
    __version__ = "0+source"
