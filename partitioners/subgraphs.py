"""Inline the subgraphs that export wraps around grad-mode and autocast regions of a forward.

``torch.export`` records a ``torch.no_grad()`` / ``set_grad_enabled`` region as a
``wrap_with_set_grad_enabled`` higher-order op, and an ``autocast`` region as
``wrap_with_autocast``: each calls a subgraph (a ``get_attr`` of a ``GraphModule``) on the
operands after it and returns the subgraph's outputs as a tuple. The graph reader sees only the
call, so the parameters used inside were unexplained. Which rows a parameter's output feeds does
not depend on the grad mode or on the dtype autocast computes in, so the subgraphs are copied into
the graph in place of their calls, the outputs taken from them with ``getitem`` replaced by the
copied nodes. Other higher-order ops (``cond``, ``flex_attention``'s score functions) do more
than call their subgraph once and stay as they are.
"""

from __future__ import annotations

import operator
from typing import Any

from torch import fx

from .ops import args_of, op_name

#: higher-order ops that call a subgraph once on the operands after it, in a mode that does not
#: change which values flow where: op -> position of the subgraph argument
CALL_SUBGRAPH_OPS = {"wrap_with_set_grad_enabled": 1, "wrap_with_autocast": 4}


def _inline(module: fx.GraphModule, call: fx.Node, at: int) -> None:
    graph = module.graph
    sub = getattr(module, str(args_of(call)[at].target))
    copied: dict[fx.Node, Any] = {}
    operands = iter(args_of(call)[at + 1 :])
    outputs: tuple[Any, ...] = ()
    with graph.inserting_before(call):
        for node in sub.graph.nodes:
            if node.op == "placeholder":
                copied[node] = next(operands)
            elif node.op == "output":
                outputs = tuple(fx.map_arg(args_of(node)[0], lambda n: copied[n]))
            else:
                copied[node] = graph.node_copy(node, lambda n: copied[n])
                if node.op == "get_attr":  # a nested region's subgraph: owned by the module now
                    name = f"{call.name}_{node.target}"
                    setattr(module, name, getattr(sub, str(node.target)))
                    copied[node].target = name
    for user in list(call.users):
        if user.op == "call_function" and user.target is operator.getitem:
            user.replace_all_uses_with(outputs[args_of(user)[1]])
            graph.erase_node(user)
    if not call.users:
        subgraph = args_of(call)[at]
        graph.erase_node(call)
        if not subgraph.users:
            graph.erase_node(subgraph)


def inline_subgraph_calls(module: fx.GraphModule) -> None:
    """Replace every call of :data:`CALL_SUBGRAPH_OPS` in ``module``'s graph by its subgraph,
    nested calls included, in place."""
    pending = [n for n in module.graph.nodes if op_name(n) in CALL_SUBGRAPH_OPS]
    while pending:
        call = pending.pop()
        before = set(module.graph.nodes)
        _inline(module, call, CALL_SUBGRAPH_OPS[op_name(call)])
        pending += [n for n in module.graph.nodes if n not in before and op_name(n) in CALL_SUBGRAPH_OPS]
