"""Rules on top of a plan: ``FQN glob``, module type or role -> role and/or layout.

A rule is plain data (YAML friendly)::

    - match: "*.attn.c_proj.weight"      # fnmatch glob on the parameter name
      layout: {kind: rows, axis: 1}
    - module: Conv2d                     # class name (or class) of the owning module
      role: conv
      layout: tensor                     # "tensor" / "element" or a layout dict
    - has_role: [query, key, value, qkv, attn_out]   # the role the plan gives (one or a list)
      layout: element                    # attention with Adam's per-element v, on any model

Rules apply in order (a later rule wins, and ``has_role`` sees the roles earlier rules set) and
mark their entries ``decided_by="rule"``. Selectors given together must all hold. Module rules need
the model to find each parameter's owner. A rule that selects no parameter warns (a typo'd glob
or role would otherwise change nothing, silently).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import yaml
from torch import nn

from .layout import BlockLayout
from .plan import PartitionPlan


@dataclass(frozen=True)
class Rule:
    """Set ``role``/``layout`` of every parameter whose name matches ``match``, whose owning
    module is a ``module`` (class or class name) and whose role in the plan is one of
    ``has_role`` (a role or a list of roles); selectors may be omitted, not all three."""

    match: str | None = None
    module: type | str | None = None
    role: str | None = None
    layout: BlockLayout | None = None
    has_role: str | tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.has_role, (list, tuple)):
            object.__setattr__(self, "has_role", tuple(self.has_role))
        roles = self._roles
        if self.has_role is not None and not (roles and all(isinstance(r, str) and r for r in roles)):
            raise ValueError(f"'has_role' takes a role name or a list of them, got {self.has_role!r}")
        if self.match is None and self.module is None and self.has_role is None:
            raise ValueError(
                "a rule needs 'match' (an FQN glob), 'module' (a module type) or 'has_role' (roles)"
            )
        if self.role is None and self.layout is None:
            raise ValueError(f"rule {self.describe()} sets neither 'role' nor 'layout'")

    @property
    def _roles(self) -> tuple[str, ...]:
        """``has_role`` as a tuple (empty when not given)."""
        return (self.has_role,) if isinstance(self.has_role, str) else self.has_role or ()

    def describe(self) -> str:
        """The rule's selectors, as a person wrote them (for messages)."""
        given = {"match": self.match, "module": self.module, "has_role": self.has_role}
        return "{" + ", ".join(f"{k}: {v!r}" for k, v in given.items() if v is not None) + "}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        unknown = set(data) - {"match", "module", "has_role", "role", "layout"}
        if unknown:
            raise ValueError(
                f"unknown rule fields {sorted(unknown)}: use match, module, has_role, role, layout"
            )
        layout = data.get("layout")
        if isinstance(layout, str):
            layout = BlockLayout.from_dict({"kind": layout})
        elif isinstance(layout, Mapping):
            layout = BlockLayout.from_dict(dict(layout))
        return cls(data.get("match"), data.get("module"), data.get("role"), layout, data.get("has_role"))

    def selects(self, name: str, owner: nn.Module | None, role: str | None = None) -> bool:
        """Whether the parameter ``name`` (owned by ``owner``, with ``role`` in the plan) is selected."""
        if self.match is not None and not fnmatch.fnmatchcase(name, self.match):
            return False
        if self.has_role is not None and role not in self._roles:
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
    used: set[int] = set()
    for name, entry in entries.items():
        owner = _owner(model, name) if any(r.module is not None for r in rules) else None
        for i, rule in enumerate(rules):
            if rule.selects(name, owner, entry.role):
                used.add(i)
                entry = replace(
                    entry,
                    role=entry.role if rule.role is None else rule.role,
                    layout=entry.layout if rule.layout is None else rule.layout,
                    decided_by="rule",
                )
        entries[name] = entry
    for i, rule in enumerate(rules):
        if i not in used:
            warnings.warn(
                f"override rule {rule.describe()} selects no parameter of the plan; check its glob, "
                "module type or role against the plan table",
                UserWarning,
                stacklevel=2,
            )
    return PartitionPlan(entries)  # checks every layout against its shape
