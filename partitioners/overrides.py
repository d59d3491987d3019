"""Rules on top of a plan: ``FQN glob`` or module type -> role and/or layout.

A rule is plain data (YAML friendly)::

    - match: "*.attn.c_proj.weight"      # fnmatch glob on the parameter name
      layout: {kind: rows, axis: 1}
    - module: Conv2d                     # class name (or class) of the owning module
      role: conv
      layout: tensor                     # "tensor" / "element" or a layout dict

Rules apply in order (a later rule wins) and mark their entries ``decided_by="rule"``. Module
rules need the model to find each parameter's owner.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
from torch import nn

from .layout import BlockLayout
from .plan import PartitionPlan


@dataclass(frozen=True)
class Rule:
    """Set ``role``/``layout`` of every parameter whose name matches ``match`` and whose owning
    module is a ``module`` (class or class name); either selector may be omitted, not both."""

    match: str | None = None
    module: type | str | None = None
    role: str | None = None
    layout: BlockLayout | None = None

    def __post_init__(self) -> None:
        if self.match is None and self.module is None:
            raise ValueError("a rule needs 'match' (an FQN glob) or 'module' (a module type)")
        if self.role is None and self.layout is None:
            raise ValueError(f"rule {self.match or self.module!r} sets neither 'role' nor 'layout'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        unknown = set(data) - {"match", "module", "role", "layout"}
        if unknown:
            raise ValueError(f"unknown rule fields {sorted(unknown)}: use match, module, role, layout")
        layout = data.get("layout")
        if isinstance(layout, str):
            layout = BlockLayout.from_dict({"kind": layout})
        elif isinstance(layout, Mapping):
            layout = BlockLayout.from_dict(dict(layout))
        return cls(data.get("match"), data.get("module"), data.get("role"), layout)

    def selects(self, name: str, owner: nn.Module | None) -> bool:
        if self.match is not None and not fnmatch.fnmatchcase(name, self.match):
            return False
        if self.module is None:
            return True
        if owner is None:
            raise ValueError(f"rule for module type {self.module!r} needs the model: pass model=")
        if isinstance(self.module, str):
            return any(c.__name__ == self.module for c in type(owner).__mro__)
        return isinstance(owner, self.module)


RuleLike = Rule | Mapping[str, Any]


def load_rules(rules: str | Iterable[RuleLike]) -> list[Rule]:
    """Rules from a YAML text (a list, or a mapping with a top-level ``rules`` list) or objects."""
    items: Iterable[RuleLike]
    if isinstance(rules, str):
        data = yaml.safe_load(rules)
        items = data.get("rules", []) if isinstance(data, Mapping) else data or []
    else:
        items = rules
    return [r if isinstance(r, Rule) else Rule.from_dict(r) for r in items]


def _owner(model: nn.Module | None, name: str) -> nn.Module | None:
    if model is None:
        return None
    prefix = name.rpartition(".")[0]
    return model.get_submodule(prefix) if prefix else model


def apply_overrides(
    plan: PartitionPlan, rules: str | Iterable[RuleLike], model: nn.Module | None = None
) -> PartitionPlan:
    """``plan`` with the rules applied in order; their entries are marked ``decided_by="rule"``."""
    rules = load_rules(rules)
    entries = dict(plan)
    for name, entry in entries.items():
        owner = _owner(model, name) if any(r.module is not None for r in rules) else None
        for rule in rules:
            if rule.selects(name, owner):
                entry = replace(
                    entry,
                    role=entry.role if rule.role is None else rule.role,
                    layout=entry.layout if rule.layout is None else rule.layout,
                    decided_by="rule",
                )
        entries[name] = entry
    return PartitionPlan(entries)  # checks every layout against its shape
