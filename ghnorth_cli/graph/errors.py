"""The error graph capture raises for models it cannot turn into a GHN-2 graph."""

from ghnorth_cli.errors import GhnorthError


class GraphCaptureError(GhnorthError):
    """The model's computational graph could not be captured (its forward pass failed,
    it returned no tensor with a gradient, or its graph has no path from the input)."""
