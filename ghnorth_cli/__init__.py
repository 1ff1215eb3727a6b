"""ghnorth: Graph HyperNetwork initialization (GHN-2, GHN-3, GHN-orth) as reproducible safetensors checkpoints."""

from ghnorth_cli._version import __version__

__all__ = ["__version__", "load_prediction", "predict_parameters"]

# Heavy names load on first use, so that `import ghnorth_cli` stays light (no torch).
_LAZY = {
    "predict_parameters": "ghnorth_cli.ghn.predict",
    "load_prediction": "ghnorth_cli.ghn.predict",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ghnorth_cli' has no attribute {name!r}")
