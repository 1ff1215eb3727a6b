"""Errors that ghnorth reports to the user as one line, without a traceback."""


class GhnorthError(Exception):
    """A problem with the user's input or environment, reported as one clear line."""


class CheckpointError(GhnorthError):
    """A checkpoint file is missing, unreadable or does not fit the model."""


class ModelResolutionError(GhnorthError):
    """An architecture name could not be resolved to a model."""
