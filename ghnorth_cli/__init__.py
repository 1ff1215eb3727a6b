"""ghnorth: Graph HyperNetwork initialization (GHN-2, GHN-orth) as reproducible safetensors checkpoints."""

from ghnorth_cli._version import __version__

__all__ = ["__version__"]
