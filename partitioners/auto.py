"""``auto_partition``: the partition read from the model's operator graph.

Methods, most to least trustworthy, each taking the parameters the previous one couldn't decide:

1. ``export`` / ``fx``: trace a meta copy (:mod:`.trace`) and read each parameter's role from the
   ops that consume it (:mod:`.uses`, :mod:`.graph_roles`, :mod:`.row_flow`, :mod:`.attention`).
   A parameter the graph uses in a way it can't explain gets one block for the whole tensor
   (role ``other``). If the whole model can't be traced, each submodule the forward reached is
   traced on its own (:mod:`.read_graph`; ``decided_by`` then names it: ``export (layers.1)``).
2. ``structure``: module types and shapes (:mod:`.structure`), for parameters no trace read.
3. ``names``: the official name rules (:mod:`.names`), last.

No exception escapes. One warning names every module that couldn't be traced (with the reason),
every parameter the graph didn't decide (with its fallback), and every projection feeding a
query or key whose heads couldn't be read. Rules
(:func:`~partitioners.overrides.apply_overrides`) go on top; a pinned plan skips tracing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .layout import BlockLayout
from .names import name_partition
from .overrides import RuleLike, apply_overrides
from .plan import Decision, PartitionPlan, PlanEntry, load_plan
from .read_graph import GraphPass, graph_pass
from .structure import structure_decisions

#: ``decided_by`` of an entry read from the graph (a re-traced submodule adds its name after a space)
GRAPH_METHODS = ("export", "fx")


class PartitionWarning(UserWarning):
    """Some parameters were not decided by the operator graph."""


def _name_rule(name: str, p: torch.Tensor) -> PlanEntry:
    """The official name rules for one parameter (heads unknown here: q/k per row)."""
    try:
        width = p.shape[-1] if p.ndim else 1
        return name_partition([(name, p)], dim=width, n_heads=width)[name]
    except ValueError:
        return PlanEntry(tuple(p.shape), "other", BlockLayout.tensor(), "names")


def auto_partition(
    model: nn.Module,
    example_inputs: tuple[Any, ...] | None = None,
    example_kwargs: dict[str, Any] | None = None,
    *,
    plan: PartitionPlan | str | Path | None = None,
    overrides: str | Iterable[RuleLike] | None = None,
    collapse_repeats: bool = True,
) -> PartitionPlan:
    """The Adam-mini partition of ``model``'s trainable parameters, read from its operator graph.

    Args:
        model: left exactly as it is (device, dtype, mode, hooks, ``requires_grad``, data).
        example_inputs: positional inputs for ``model(*example_inputs)``: tensors on any device
            (only shape and dtype are used) or ``torch.Size`` shapes (token ids, or floats if
            the model doesn't take ids). Without them the graph can't be traced and the
            module-structure and name fallbacks decide.
        example_kwargs: keyword inputs, same rules.
        plan: a pinned plan (``PartitionPlan`` or YAML path): checked against the model and used
            as is, nothing is traced.
        overrides: rules (see :mod:`partitioners.overrides`) applied on top.
        collapse_repeats: trace runs of identical blocks once (see :mod:`partitioners.repeats`).
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if plan is not None:
        result = load_plan(plan)
        result.check_params(named)
    else:
        graph = (
            GraphPass(failures=["<model>: no example_inputs or example_kwargs given"])
            if example_inputs is None and not example_kwargs
            else graph_pass(model, tuple(example_inputs or ()), example_kwargs, collapse_repeats)
        )
        result = _plan_from(model, named, graph)
    if overrides is not None:
        result = apply_overrides(result, overrides, model)
    return result


def _plan_from(
    model: nn.Module, named: Sequence[tuple[str, torch.Tensor]], graph: GraphPass
) -> PartitionPlan:
    """Graph decisions first, then module structure, then name rules; warns about the rest."""
    try:
        structure = structure_decisions(model)
    except Exception:  # a module type whose attributes aren't what they usually are
        structure = {}
    entries, unexplained, fallen_back = [], [], []
    for name, p in named:
        shape = tuple(p.shape)
        decision, method = graph.decisions.get(name, (None, ""))
        if decision is not None and not _fits(decision, shape):
            decision = None  # a layout read for another shape (a traced copy that differs)
        if method and decision is None:
            entries.append((name, PlanEntry(shape, "other", BlockLayout.tensor(), method)))
            if name not in graph.heads_unread:
                unexplained.append(name)
        elif decision is not None:
            entries.append((name, PlanEntry(shape, decision.role, decision.layout, method)))
        elif name in structure:
            d = structure[name]
            entries.append((name, PlanEntry(shape, d.role, d.layout, "structure")))
            fallen_back.append(f"{name} (structure)")
        else:
            entry = _name_rule(name, p)
            entries.append((name, entry))
            fallen_back.append(f"{name} (names: {entry.role})")
    heads = sorted(n for n in graph.heads_unread if n in dict(named))
    _warn(graph.failures, unexplained, heads, fallen_back)
    return PartitionPlan(entries)


def _fits(decision: Decision, shape: tuple[int, ...]) -> bool:
    try:
        decision.layout.check(shape)
    except ValueError:
        return False
    return True


def _warn(failures: list[str], unexplained: list[str], heads: list[str], fallen_back: list[str]) -> None:
    if not (unexplained or heads or fallen_back):
        return
    lines = []
    for failure in failures:
        module, _, reason = failure.partition(": ")
        what = "the model" if module == "<model>" else f"module {module}"
        lines.append(f"{what} could not be traced ({reason})")
    if failures:
        lines.append("its parameters that no submodule trace could read fall back (listed below)")
    if heads:
        lines.append(
            "these feed the query or key side of an attention whose heads could not be read, "
            "one block each: " + ", ".join(heads)
        )
    if unexplained:
        lines.append(
            "the graph uses these in ways it can't explain, one block each: " + ", ".join(unexplained)
        )
    if fallen_back:
        lines.append("not decided by the graph: " + ", ".join(fallen_back))
    lines.append("check them in the plan table, or pin them with overrides=[{'match': ..., 'layout': ...}]")
    warnings.warn("auto_partition: " + "\n  ".join(lines), PartitionWarning, stacklevel=3)
