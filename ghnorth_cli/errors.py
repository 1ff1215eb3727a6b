"""Errors that ghnorth reports to the user as one line, without a traceback."""


class GhnorthError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""


class CheckpointError(GhnorthError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


class ModelResolutionError(GhnorthError):
    """An architecture name could not be resolved to a model."""


def unpickling_refusal(exc: BaseException) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, without torch's advice to allowlist or unsafe-load.

    E.g. ``"it refers to builtins.eval"``; never the suggestion to call ``add_safe_globals`` or to
    pass ``weights_only=False``, which would run code from an untrusted file.
    """
    import re

    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    if found:
        return f"it refers to {found.group(1)}, which is not a tensor or a plain container"
    return "it holds objects other than tensors and plain containers"
