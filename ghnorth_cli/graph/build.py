"""Step 2 of graph capture: turn an autograd graph into a graph of parameters and ops.

The autograd graph is walked depth-first from the output, children in ``next_functions``
order, as DeepNets-1M does. An autograd node whose direct children include parameters that
have a primitive is replaced by one graph node per such parameter (in ``next_functions``
order, chained: weight -> bias); any other autograd node becomes one op node. The order in
which nodes are created matters: it breaks ties in the topological sort later.
"""

from __future__ import annotations

from typing import Any

from ghnorth_cli.graph.digraph import DiGraph, Node
from ghnorth_cli.graph.primitives import op_name, op_primitive, param_primitive
from ghnorth_cli.graph.trace import ParamInfo, Trace

_POOL_OPS = ("MaxPool2DWithIndices", "AvgPool2D")


def param_node(info: ParamInfo) -> Node | None:
    """The node for a parameter, or ``None`` if the parameter gets no node."""
    primitive = param_primitive(info.module, info.local_name, ndim=len(info.shape))
    if primitive is None:
        return None
    return Node(name=info.name, primitive=primitive, is_param=True, shape=info.shape, module=info.module)


def op_node(fn: Any, *, global_pool: bool = False) -> Node:
    """The node for an autograd op; keeps the attributes later steps read (pool size, keepdim,
    number of reduced dims). ``global_pool`` marks the output of a global-pooling module."""
    name = type(fn).__name__
    attrs: dict[str, Any] = {}
    op = op_name(name)
    if op in _POOL_OPS:
        kernel = getattr(fn, "_saved_kernel_size", None)
        attrs["kernel_size"] = tuple(int(k) for k in kernel) if kernel is not None else (3, 3)
    elif op == "Mean":
        keepdim = getattr(fn, "_saved_keepdim", None)
        if keepdim is not None:
            attrs["keepdim"] = bool(keepdim)
            attrs["reduced_dims"] = len(getattr(fn, "_saved_dim", None) or ())
        attrs["global_pool"] = global_pool
    return Node(name=name, primitive=op_primitive(op), attrs=attrs)


def input_dependents(root: Any, input_fn: Any) -> set:
    """The autograd nodes whose value depends on the input (``input_fn`` is its AccumulateGrad)."""
    depends: set = set()
    done: set = set()
    stack = [(root, False)]
    while stack:
        fn, expanded = stack.pop()
        if fn in done:
            continue
        if expanded:
            done.add(fn)
            if any(c is input_fn or c in depends for c, _ in fn.next_functions if c is not None):
                depends.add(fn)
            continue
        stack.append((fn, True))
        stack.extend((c, False) for c, _ in fn.next_functions if c is not None and c not in done)
    return depends


def _accumulators(fn: Any) -> tuple[list[Any], int]:
    """AccumulateGrad nodes under ``fn`` (depth-first) and the number of other nodes there."""
    found, n_ops, seen, stack = [], 0, set(), [fn]
    while stack:
        f = stack.pop()
        if f in seen:
            continue
        seen.add(f)
        if hasattr(f, "variable"):
            found.append(f)
            continue
        n_ops += 1
        stack.extend(c for c, _ in reversed(f.next_functions) if c is not None)
    return found, n_ops


class _Walker:
    """Iterative depth-first walk (deep networks exceed Python's recursion limit)."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.depends = input_dependents(trace.root, trace.input_fn)
        self.collapsed: dict[Any, list[Any]] = {}
        self.graph = DiGraph()
        self.seen: dict[Any, tuple[int | None, bool]] = {}  # fn -> (its last node, is a bias leaf)
        self.own: dict[Any, dict[Any, tuple[int, bool]]] = {}  # fn -> {its parameter leaves: their nodes}
        self.input_users: list[int] = []

    def children(self, fn: Any) -> list[Any]:
        """``fn``'s children, with parameter transforms collapsed onto their parameters.

        A child that does not depend on the input, is more than one op deep and holds
        parameters with a primitive (weight standardization, a resampled position embedding)
        is replaced by those parameters' AccumulateGrad nodes. One-op transforms (a linear
        weight's transpose, a class token's expand) are kept, as DeepNets-1M keeps them.
        """
        out = []
        for child, _ in fn.next_functions:
            if child is None:
                continue
            if child is self.trace.input_fn or child in self.depends or hasattr(child, "variable"):
                out.append(child)
                continue
            if child not in self.collapsed:
                accs, n_ops = _accumulators(child)
                mapped = [a for a in accs if self._param(a) is not None]
                self.collapsed[child] = mapped if n_ops >= 2 and mapped else [child]
            out.extend(self.collapsed[child])
        return out

    def _param(self, acc: Any) -> Node | None:
        info = self.trace.params.get(id(acc.variable))
        return None if info is None else param_node(info)

    def _leaves(self, fn: Any) -> list[tuple[Any, Node]]:
        """Parameters among ``fn``'s children that get a node.

        A parameter used by several ops (a module applied twice, or shared between blocks) gets a
        node at each use, wired only to that use; the GHN predicts its tensor once, from the first
        of those nodes in graph order (``ghn.plan.plan_prediction``).
        """
        leaves = []
        for child in self.children(fn):
            if hasattr(child, "variable"):
                node = self._param(child)
                if node is not None:
                    leaves.append((child, node))
        return leaves

    def _open(self, fn: Any) -> int | None:
        """Create the nodes of ``fn``; returns its first node (``None`` for AccumulateGrad)."""
        first = last = None
        if not hasattr(fn, "variable"):
            leaves = self._leaves(fn) or [
                (fn, op_node(fn, global_pool=fn in self.trace.global_pools))
            ]
            own = self.own.setdefault(fn, {})
            for key, node in leaves:
                last = self.graph.add_node(node)
                first = last if first is None else first
                own[key] = self.seen[key] = (last, node.primitive == "bias")
        self.seen[fn] = (last, False)
        return first

    def _link(self, first: int | None, child: tuple[int | None, bool]) -> None:
        link, is_bias = child
        if link is None or first is None or link == first:
            return
        if is_bias:
            self.graph.add_edge(first, link)
        else:
            self.graph.add_edge(link, first)

    def walk(self) -> DiGraph:
        root = self.trace.root
        stack = [(root, self._open(root), iter(self.children(root)))]
        while stack:
            fn, first, children = stack[-1]
            for child in children:
                if child is self.trace.input_fn:
                    if first is not None:
                        self.input_users.append(first)
                    continue
                if child in self.own.get(fn, ()):  # this op's own node for a parameter used elsewhere too
                    self._link(first, self.own[fn][child])
                    continue
                if child in self.seen:
                    self._link(first, self.seen[child])
                    continue
                stack.append((child, self._open(child), iter(self.children(child))))
                break
            else:
                stack.pop()
                if stack:
                    self._link(stack[-1][1], self.seen[fn])
        return self.graph


def build_graph(trace: Trace) -> tuple[DiGraph, list[int]]:
    """The parameter/op graph of ``trace`` and the nodes that read the input directly."""
    walker = _Walker(trace)
    graph = walker.walk()
    return graph, sorted(set(walker.input_users))
