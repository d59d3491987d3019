"""`PartitionPlan`: the contract between partitioners and the optimizer.

A plan maps every trainable parameter's fully-qualified name (as ``model.named_parameters()``
yields it, tied parameters once) to a :class:`PlanEntry`: its shape, its role in the model, its
:class:`~partitioners.layout.BlockLayout` and the method that decided it. Plans are plain data:
they print as a table, round-trip exactly through YAML and compare with ``==``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import torch
import yaml

from .layout import BlockLayout

#: Columns of the plan table (:meth:`PartitionPlan.rows`).
COLUMNS = ("param", "shape", "role", "layout", "#blocks", "decided-by")


@dataclass(frozen=True)
class Decision:
    """A role and a layout, before the shape and the deciding method make a :class:`PlanEntry`."""

    role: str
    layout: BlockLayout


#: A convolution weight is one block per tensor: that trained at least as well as one block per
#: output channel in benchmarks/conv_blocks.py (figures in the README); an override
#: (``layout: {kind: rows, axis: 0}``) gives the other.
CONV_LAYOUT = BlockLayout.tensor()


@dataclass(frozen=True)
class PlanEntry:
    """One parameter's row in the plan."""

    shape: tuple[int, ...]
    role: str
    layout: BlockLayout
    decided_by: str = "manual"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    @property
    def num_blocks(self) -> int:
        return self.layout.num_blocks(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "role": self.role,
            "layout": self.layout.to_dict(),
            "decided_by": self.decided_by,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanEntry:
        return cls(
            shape=tuple(data["shape"]),
            role=str(data["role"]),
            layout=BlockLayout.from_dict(dict(data["layout"])),
            decided_by=str(data.get("decided_by", "manual")),
        )


def _entry_from_dict(data: Any, where: str) -> PlanEntry:
    """``PlanEntry.from_dict`` with every missing field or non-integer size named by ``where``."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: an entry is a mapping with shape, role and layout, got {data!r}")
    missing = [k for k in ("shape", "role", "layout") if k not in data]
    if missing:
        raise ValueError(f"{where}: entry lacks {missing}")
    if not isinstance(data["layout"], Mapping):
        raise ValueError(
            f"{where}: layout must be a mapping like {{kind: rows, axis: 0}}, got {data['layout']!r}"
        )
    for field, value in (("shape", data["shape"]), *(("layout " + k, v) for k, v in data["layout"].items())):
        for number in _numbers(value):
            if not isinstance(number, int) or isinstance(number, bool):
                raise ValueError(f"{where}: {field} must hold integers, got {value!r}")
    try:
        return PlanEntry.from_dict(data)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def _numbers(value: Any) -> list[Any]:
    """The non-string leaves of a YAML value (sizes and axes must all be integers)."""
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    return [] if isinstance(value, str) else [value]


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a mapping with the same key twice (PyYAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class PlanMismatchError(ValueError):
    """A plan does not describe the parameters it is applied to."""


class PartitionPlan(Mapping[str, PlanEntry]):
    """An ordered, immutable mapping ``fqn -> PlanEntry``; each layout is checked against its shape."""

    def __init__(self, entries: Mapping[str, PlanEntry] | Iterable[tuple[str, PlanEntry]]):
        # cast: pyright narrows the pairs to a Mapping keyed by pairs too, which no caller passes.
        items: Iterable[tuple[str, PlanEntry]] = (
            cast(Mapping[str, PlanEntry], entries).items() if isinstance(entries, Mapping) else entries
        )
        self._entries: dict[str, PlanEntry] = {}
        for name, entry in items:
            if name in self._entries:
                raise ValueError(f"parameter {name!r} appears twice in the plan")
            try:
                entry.layout.check(entry.shape)
            except ValueError as err:
                raise PlanMismatchError(f"plan entry {name!r}: {err}") from None
            self._entries[name] = entry

    # ---- mapping ------------------------------------------------------------------------
    def __getitem__(self, name: str) -> PlanEntry:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PartitionPlan):
            return NotImplemented
        return list(self._entries.items()) == list(other._entries.items())

    def __hash__(self) -> int:  # plans are values
        return hash(tuple(self._entries.items()))

    def replace(self, name: str, **changes: Any) -> PartitionPlan:
        """A copy with entry ``name``'s fields (role, layout, decided_by) changed."""
        if name not in self._entries:
            raise KeyError(f"no parameter {name!r} in the plan")
        new = dict(self._entries)
        new[name] = replace(new[name], **changes)
        return PartitionPlan(new)

    # ---- totals -------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return sum(torch.Size(e.shape).numel() for e in self._entries.values())

    @property
    def num_blocks(self) -> int:
        """Second-moment values the plan keeps (AdamW keeps ``num_params``)."""
        return sum(e.num_blocks for e in self._entries.values())

    # ---- checking against parameters ------------------------------------------------------
    def check_params(
        self, named_params: Iterable[tuple[str, torch.Tensor]], *, allow_extra: bool = False
    ) -> None:
        """Raise :class:`PlanMismatchError` naming the first parameter the plan doesn't fit.

        Shapes are compared with the *global* shape (a DTensor's full shape under FSDP2).
        ``allow_extra`` accepts plan entries for parameters not given (a subset being optimized).
        """
        seen = set()
        for name, p in named_params:
            seen.add(name)
            if name not in self._entries:
                raise PlanMismatchError(
                    f"parameter {name!r} {tuple(p.shape)} is not in the partition plan; "
                    "re-run auto_partition on this model or add an entry for it"
                )
            want = self._entries[name].shape
            if tuple(p.shape) != want:
                raise PlanMismatchError(
                    f"parameter {name!r} has shape {tuple(p.shape)} but the plan was made for "
                    f"{want}; the plan belongs to another model"
                )
        extra = [n for n in self._entries if n not in seen]
        if extra and not allow_extra:
            raise PlanMismatchError(
                f"the plan names parameters the model doesn't have: {extra[:5]}"
                + (" ..." if len(extra) > 5 else "")
                + "; the plan belongs to another model (or those params are frozen)"
            )

    # ---- plain data / YAML --------------------------------------------------------------
    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: e.to_dict() for name, e in self._entries.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]], source: str = "plan") -> PartitionPlan:
        """The inverse of :meth:`to_dict`; a malformed entry raises ``ValueError`` naming
        ``source`` (e.g. the file) and the parameter."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: 'params' must map parameter names to entries, got {data!r}")
        entries = [
            (str(name), _entry_from_dict(e, f"{source}: parameter {name!r}")) for name, e in data.items()
        ]
        try:
            return cls(entries)
        except PlanMismatchError as err:
            raise PlanMismatchError(f"{source}: {err}") from None

    def to_yaml(self) -> str:
        """YAML text; ``PartitionPlan.from_yaml(plan.to_yaml()) == plan``."""
        return yaml.safe_dump({"params": self.to_dict()}, sort_keys=False, default_flow_style=None)

    @classmethod
    def from_yaml(cls, text: str, source: str = "plan YAML") -> PartitionPlan:
        """The inverse of :meth:`to_yaml`. ``source`` (the file's path) is named in errors; a
        duplicate key is an error, not a silent overwrite."""
        try:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader: no arbitrary objects
        except yaml.YAMLError as err:
            raise ValueError(f"{source}: not valid YAML: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            raise ValueError(
                f"{source}: a partition plan YAML has a top-level 'params' mapping (parameter name -> "
                f"shape, role, layout), got {data!r:.80}; write one with plan.to_yaml()"
            )
        return cls.from_dict(data["params"], source)

    # ---- table --------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        """Table rows: (param, shape, role, layout, #blocks, decided-by)."""
        return [
            (
                name,
                "x".join(map(str, e.shape)) or "()",
                e.role,
                str(e.layout),
                f"{e.num_blocks:,}",
                e.decided_by,
            )
            for name, e in self._entries.items()
        ]

    def summary(self) -> str:
        """Footer: blocks (v values) against parameters (what AdamW would keep)."""
        n, b = self.num_params, self.num_blocks
        frac = b / n if n else 0.0
        return f"{len(self)} tensors, {n:,} params, {b:,} v values ({frac:.4%} of AdamW's v)"

    def __str__(self) -> str:
        header = COLUMNS
        rows = self.rows()
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
        lines.insert(1, "  ".join("-" * w for w in widths))
        lines.append(self.summary())
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"PartitionPlan(<{self.summary()}>)"


def load_plan(plan: PartitionPlan | str | Path) -> PartitionPlan:
    """A plan object as is, or read from a YAML file path (errors name the file)."""
    if isinstance(plan, PartitionPlan):
        return plan
    path = Path(plan).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"partition plan file {str(plan)!r} does not exist")
    return PartitionPlan.from_yaml(path.read_text(), source=str(plan))
