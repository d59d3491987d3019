"""Trace repeated blocks once: a 80-layer model has one layer's worth of distinct structure.

Tracing costs about a millisecond per operator, so an 80-layer model spends almost all of it
re-tracing the same layer. Inside a ``ModuleList`` or ``Sequential`` (of a *meta copy*), a run of
three or more consecutive siblings that are provably the same (module classes throughout the
subtree, parameter and buffer names, shapes, dtypes, ``requires_grad``, and every non-parameter
attribute: layer type, sliding window, ``is_causal``; objects only if shared) and share no
parameter outside themselves is cut to its first and last member. The first stands for the middle ones; the last keeps whatever the
end of the run feeds (an output head after a stack of linears sees the last one only). The
returned ``rename`` maps a parameter name of the full model to its name in the collapsed copy.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_Signature = tuple


_SIMPLE = (bool, int, float, str, type(None), torch.dtype, torch.device)


def _value(value: Any, depth: int = 0) -> Any:
    """A comparable stand-in for an attribute: plain values as they are, containers and
    dataclasses by content, tensors by shape and dtype, any other object by identity (a config
    object shared by all layers is the same; two different objects never prove equal)."""
    if isinstance(value, _SIMPLE):
        return value
    if depth < 4 and isinstance(value, (list, tuple)):
        return (type(value), tuple(_value(v, depth + 1) for v in value))
    if depth < 4 and isinstance(value, dict):
        return (dict, tuple(sorted(((repr(k), _value(v, depth + 1)) for k, v in value.items()))))
    if isinstance(value, enum.Enum):
        return (type(value), value.value)
    if isinstance(value, torch.Tensor):
        return (torch.Tensor, tuple(value.shape), value.dtype)
    if depth < 4 and dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = tuple((f.name, _value(getattr(value, f.name), depth + 1)) for f in dataclasses.fields(value))
        return (type(value), fields)
    return ("object", id(value))


def _settings(module: nn.Module) -> tuple:
    """Every non-parameter attribute of a module (head counts, windows, flags, configs...)."""
    return tuple(
        (name, _value(value))
        for name, value in sorted(vars(module).items())
        if not name.startswith("_") and name != "training"
    )


def _signature(module: nn.Module) -> _Signature:
    params = tuple(
        (n, tuple(p.shape), p.dtype, p.requires_grad)
        for n, p in module.named_parameters(remove_duplicate=False)
    )
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in module.named_buffers(remove_duplicate=False))
    modules = tuple((n, type(m)) for n, m in module.named_modules())
    settings = tuple((n, _settings(m)) for n, m in module.named_modules())
    return (params, buffers, modules), settings


def _same(a: _Signature, i: int, b: _Signature, j: int) -> bool:
    """Blocks ``a`` (at position ``i``) and ``b`` (at ``j``) have the same structure; an int
    setting equal to each block's own position is its index (``layer_idx``), not a difference."""
    if a[0] != b[0]:
        return False
    for (_, sa), (_, sb) in zip(a[1], b[1]):
        if [name for name, _ in sa] != [name for name, _ in sb]:
            return False
        for (_, va), (_, vb) in zip(sa, sb):
            if va != vb and not (type(va) is int and type(vb) is int and (va, vb) == (i, j)):
                return False
    return True


def _runs(children: list[nn.Module], shared: set[int]) -> list[tuple[int, int]]:
    """Maximal [start, end) runs of identical, unshared siblings."""
    sigs = [
        None if any(id(p) in shared for p in c.parameters(recurse=True)) else _signature(c) for c in children
    ]
    runs, start = [], 0
    for i in range(1, len(children) + 1):
        first = sigs[start]
        sig = sigs[i] if i < len(children) else None  # None: past the end, or shared parameters
        if sig is None or first is None or not _same(first, start, sig, i):
            runs.append((start, i))
            start = i
    return runs


def collapse_repeated_blocks(model: nn.Module, min_run: int = 3) -> Callable[[str], str]:
    """Cut runs of identical blocks in ``model`` (in place: pass a copy) and return the renaming."""
    counts = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    shared = {pid for pid, n in counts.items() if n > 1}
    # container path (in collapsed naming) -> {original index: collapsed index}
    remaps: dict[str, dict[int, int]] = {}

    def visit(module: nn.Module, path: str) -> None:
        if isinstance(module, (nn.ModuleList, nn.Sequential)) and len(module) >= min_run:
            children = list(module)
            keep: list[nn.Module] = []
            remap: dict[int, int] = {}
            for start, end in _runs(children, shared):
                if end - start >= min_run:
                    first, last = len(keep), len(keep) + 1
                    keep += [children[start], children[end - 1]]
                    remap.update({i: first for i in range(start, end - 1)})
                    remap[end - 1] = last
                else:
                    for i in range(start, end):
                        remap[i] = len(keep)
                        keep.append(children[i])
            if len(keep) < len(children):
                for key in list(module._modules):
                    del module._modules[key]
                for i, child in enumerate(keep):
                    module._modules[str(i)] = child
                remaps[path] = remap
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")

    def rename(name: str) -> str:
        parts = name.split(".")
        out: list[str] = []
        for part in parts:
            remap = remaps.get(".".join(out))
            out.append(str(remap[int(part)]) if remap is not None and part.isdigit() else part)
        return ".".join(out)

    return rename
