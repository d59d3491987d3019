"""What single data-dependent ops give on meta tensors at their upper bound (see
:mod:`partitioners.upper_bounds`, whose mode answers calls with them): every element selected,
every element distinct, a boolean mask index as the indices of all its elements.
"""

from __future__ import annotations

from typing import Any

import torch


def is_meta(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def all_indices(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x.nonzero(as_tuple=True)`` if every element of ``x`` were nonzero."""
    if x.dim() == 0:
        return (torch.zeros(1, dtype=torch.long, device=x.device),)
    ranges = [torch.arange(n, device=x.device) for n in x.shape]
    return tuple(g.reshape(-1) for g in torch.meshgrid(*ranges, indexing="ij"))


def nonzero_all(x: torch.Tensor, *, as_tuple: bool = False, **kwargs: Any) -> Any:
    if kwargs:
        return NotImplemented
    indices = all_indices(x)
    if as_tuple:
        return indices
    if x.dim() == 0:
        return torch.zeros(1, 0, dtype=torch.long, device=x.device)
    return torch.stack(indices, dim=1)


def where_all(cond: torch.Tensor, *rest: Any, **kwargs: Any) -> Any:
    return NotImplemented if rest or kwargs else all_indices(cond)


def masked_select_all(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(x.shape, mask.shape)
    return x.expand(shape).reshape(-1)


def unique_all(
    x: torch.Tensor,
    sorted: bool = True,
    return_inverse: bool = False,
    return_counts: bool = False,
    dim: int | None = None,
) -> Any:
    if dim is not None:
        return NotImplemented
    values = x.reshape(-1)
    extra = []
    if return_inverse:
        extra.append(torch.arange(x.numel(), device=x.device).reshape(x.shape))
    if return_counts:
        extra.append(torch.ones(x.numel(), dtype=torch.long, device=x.device))
    return (values, *extra) if extra else values


def _expanded(index: Any) -> tuple[Any, ...]:
    """A boolean meta mask as the indices of all its elements (one tensor per mask axis)."""
    if is_meta(index) and index.dtype in (torch.bool, torch.uint8):
        return all_indices(index)
    return (index,)


def mask_free(index: Any) -> Any:
    """An index with every boolean meta mask replaced by the indices of all its elements."""
    if isinstance(index, tuple):
        return tuple(part for i in index for part in _expanded(i))
    parts = _expanded(index)
    return index if parts[0] is index else parts


def tensor_index(index: Any) -> list[torch.Tensor | None] | None:
    """``x[e]`` with a 0-d integer meta tensor ``e`` (an expert id) as the indices of an
    ``aten.index``, which keeps ``e`` a tensor: ``__getitem__`` would read its value. ``None``
    when the index has no such tensor or has parts ``aten.index`` can't take (a partial slice)."""
    parts = index if isinstance(index, tuple) else (index,)
    if not any(is_meta(p) and p.dim() == 0 and not p.is_floating_point() for p in parts):
        return None
    if not all(isinstance(p, torch.Tensor) or p == slice(None) for p in parts):
        return None
    return [p if isinstance(p, torch.Tensor) else None for p in parts]


def getitem(x: torch.Tensor, index: Any) -> torch.Tensor:
    index = mask_free(index)
    indices = tensor_index(index)
    return x[index] if indices is None else torch.ops.aten.index.Tensor(x, indices)
