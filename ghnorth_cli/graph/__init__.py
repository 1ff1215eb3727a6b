"""Graph capture: any ``nn.Module`` classifier -> the graph a GHN-2 reads (see capture.py)."""

from ghnorth_cli.graph.capture import capture_graph
from ghnorth_cli.graph.errors import GraphCaptureError
from ghnorth_cli.graph.types import PRIMITIVE_IDS, PRIMITIVES, ModelGraph, ParamNode

__all__ = ["PRIMITIVES", "PRIMITIVE_IDS", "GraphCaptureError", "ModelGraph", "ParamNode", "capture_graph"]
