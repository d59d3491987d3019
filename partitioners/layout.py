"""How one parameter's elements are grouped into Adam-mini blocks (one second moment per block).

A :class:`BlockLayout` is plain, hashable data. Three kinds cover the whole partition table:

* ``tensor``:  the whole tensor is one block (norm scales, unexplained params).
* ``element``: every element is its own block, i.e. plain Adam (biases).
* ``rows``:    blocks are indexed by one *row axis* (the axis of the op's outputs: 0 for an
  ``nn.Linear`` weight, 1 for GPT-2's ``Conv1D``) and optionally by further *batch axes*
  (the expert axis of a 3-D MoE weight). Along the row axis, consecutive rows are grouped:
  by default one block per row; ``group=h`` gives one block per ``h`` rows (attention heads);
  ``segments`` give a different grouping per contiguous stretch of rows, in any order
  (fused ``q|k|v``: per-head, per-head, per-row), and ``repeat`` tiles that pattern
  (per-head interleaving ``q_h k_h v_h``).

Every element in a block shares the reduced axes (all axes that are neither the row axis nor a
batch axis), so a block's mean of squares is the mean of its rows' means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

LayoutKind = Literal["tensor", "element", "rows"]


@dataclass(frozen=True)
class Segment:
    """``length`` consecutive rows along the row axis, grouped ``block`` rows per block.

    ``block == 1`` is one block per row (value, MLP); ``block == head_dim`` is one block per head
    (query, key); ``block == length`` makes the whole segment one block. ``label`` is free text
    shown in the plan table (``"q"``, ``"k"``, ``"v"``, ``"gate"``...).
    """

    length: int
    block: int = 1
    label: str = ""

    def __post_init__(self) -> None:
        if self.length <= 0 or self.block <= 0 or self.length % self.block:
            raise ValueError(
                f"Segment(length={self.length}, block={self.block}): length must be a positive "
                "multiple of block"
            )

    @property
    def num_blocks(self) -> int:
        return self.length // self.block


@dataclass(frozen=True)
class BlockLayout:
    """The block structure of one parameter. Build it with the class methods."""

    kind: LayoutKind
    axis: int = 0
    batch_axes: tuple[int, ...] = ()
    group: int = 1
    segments: tuple[Segment, ...] = ()
    repeat: int = 1

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    def tensor(cls) -> BlockLayout:
        """One block for the whole tensor."""
        return cls("tensor")

    @classmethod
    def element(cls) -> BlockLayout:
        """One block per element (plain Adam)."""
        return cls("element")

    @classmethod
    def rows(cls, axis: int = 0, group: int = 1, batch_axes: Sequence[int] = ()) -> BlockLayout:
        """One block per ``group`` consecutive indices along ``axis`` (and per batch-axis index)."""
        return cls("rows", axis=axis, group=group, batch_axes=tuple(batch_axes))

    @classmethod
    def segmented(
        cls,
        segments: Sequence[Segment | tuple[int, int] | tuple[int, int, str]],
        axis: int = 0,
        repeat: int = 1,
        batch_axes: Sequence[int] = (),
    ) -> BlockLayout:
        """Row segments along ``axis`` in order, the pattern tiled ``repeat`` times."""
        # cast: pyright can't spread a union of tuple lengths over Segment's fields.
        segs = tuple(s if isinstance(s, Segment) else Segment(*cast(tuple[Any, ...], s)) for s in segments)
        return cls("rows", axis=axis, segments=segs, repeat=repeat, batch_axes=tuple(batch_axes))

    def __post_init__(self) -> None:
        if self.kind not in ("tensor", "element", "rows"):
            raise ValueError(f"unknown layout kind {self.kind!r}: use tensor, element or rows")
        if self.kind != "rows" and (
            self.axis or self.batch_axes or self.group != 1 or self.segments or self.repeat != 1
        ):
            raise ValueError(f"a {self.kind!r} layout takes no axis, group or segments")
        if self.group <= 0 or self.repeat <= 0:
            raise ValueError("group and repeat must be positive")
        if self.segments and self.group != 1:
            raise ValueError("give either group or segments, not both")
        if self.axis in self.batch_axes or len(set(self.batch_axes)) != len(self.batch_axes):
            raise ValueError(f"batch_axes {self.batch_axes} must be distinct from axis {self.axis}")

    # ---- geometry -----------------------------------------------------------------------
    def check(self, shape: Sequence[int]) -> None:
        """Raise ``ValueError`` (without a parameter name; callers add it) if ``shape`` doesn't fit."""
        if self.kind != "rows":
            return
        ndim = len(shape)
        for ax in (self.axis, *self.batch_axes):
            if not 0 <= ax < ndim:
                raise ValueError(f"axis {ax} is out of range for a {ndim}-D tensor {tuple(shape)}")
        n = shape[self.axis]
        if self.segments:
            covered = self.repeat * sum(s.length for s in self.segments)
            if covered != n:
                raise ValueError(f"segments cover {covered} rows along axis {self.axis}, the tensor has {n}")
        elif n % self.group:
            raise ValueError(f"{n} rows along axis {self.axis} don't split into groups of {self.group}")

    def blocks_along_axis(self, shape: Sequence[int]) -> int:
        if self.segments:
            return self.repeat * sum(s.num_blocks for s in self.segments)
        return shape[self.axis] // self.group

    def num_blocks(self, shape: Sequence[int]) -> int:
        """How many second-moment values this layout keeps for a tensor of ``shape``."""
        if self.kind == "tensor":
            return 1
        if self.kind == "element":
            return math.prod(shape)
        return self.blocks_along_axis(shape) * math.prod(shape[a] for a in self.batch_axes)

    def reduce_dims(self, ndim: int) -> tuple[int, ...]:
        """The axes averaged over inside one block's row (all but the row and batch axes)."""
        if self.kind == "element":
            return ()
        if self.kind == "tensor":
            return tuple(range(ndim))
        kept = {self.axis, *self.batch_axes}
        return tuple(d for d in range(ndim) if d not in kept)

    def v_shape(self, shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of the second-moment tensor: ``shape`` with reduced axes 1, row axis = #blocks."""
        if self.kind == "element":
            return tuple(shape)
        out = [1] * len(shape)
        if self.kind == "rows":
            for a in self.batch_axes:
                out[a] = shape[a]
            out[self.axis] = self.blocks_along_axis(shape)
        return tuple(out)

    def row_to_block(self, shape: Sequence[int]) -> list[int] | None:
        """For each row along the row axis, the index of its block; ``None`` when one block per row."""
        if self.kind != "rows" or (not self.segments and self.group == 1):
            return None
        if not self.segments:
            return [r // self.group for r in range(shape[self.axis])]
        index: list[int] = []
        first = 0
        for _ in range(self.repeat):
            for seg in self.segments:
                index.extend(first + r // seg.block for r in range(seg.length))
                first += seg.num_blocks
        return index

    # ---- text and plain data ------------------------------------------------------------
    def __str__(self) -> str:
        if self.kind != "rows":
            return self.kind
        where = f"dim={self.axis}"
        if self.batch_axes:
            where = "dims=" + ",".join(map(str, (*self.batch_axes, self.axis)))
        if self.segments:
            parts = " + ".join(
                f"{s.label + ':' if s.label else ''}{s.length}/{s.block}" for s in self.segments
            )
            pattern = f"({parts})" + (f" x{self.repeat}" if self.repeat > 1 else "")
            return f"segments({where}, {pattern})"
        if self.group > 1:
            return f"heads({where}, size={self.group})"
        return f"rows({where})"

    def to_dict(self) -> dict[str, Any]:
        """Plain data for YAML/state dicts: only the fields that differ from the defaults."""
        out: dict[str, Any] = {"kind": self.kind}
        if self.kind == "rows":
            out["axis"] = self.axis
            if self.batch_axes:
                out["batch_axes"] = list(self.batch_axes)
            if self.group != 1:
                out["group"] = self.group
            if self.segments:
                out["segments"] = [
                    [s.length, s.block, s.label] if s.label else [s.length, s.block] for s in self.segments
                ]
            if self.repeat != 1:
                out["repeat"] = self.repeat
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockLayout:
        unknown = set(data) - {"kind", "axis", "batch_axes", "group", "segments", "repeat"}
        if unknown:
            raise ValueError(f"unknown layout fields {sorted(unknown)} in {data}")
        return cls(
            kind=data["kind"],
            axis=int(data.get("axis", 0)),
            batch_axes=tuple(int(a) for a in data.get("batch_axes", ())),
            group=int(data.get("group", 1)),
            segments=tuple(Segment(*s) for s in data.get("segments", ())),
            repeat=int(data.get("repeat", 1)),
        )
