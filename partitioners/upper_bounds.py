"""Data-dependent code on meta tensors, followed at its upper bound: every route is taken.

A meta tensor has a shape but no values, so ``nonzero``, a ``bool(mask.any())`` or an
``.item()`` used as a length can't be computed, and a trace of a forward that uses them (a
mixture of experts looping over the experts hit, a causal-mask check) stops there. Inside
:class:`UpperBounds` (a ``TorchFunctionMode``, active only while it is entered) these calls on
meta tensors are answered with the largest structure they could have:

* ``nonzero`` / ``argwhere`` / ``where(cond)`` / a boolean mask index select *every* element
  (``(numel, ndim)`` indices, built from ``arange`` so that a tracer records them as ordinary
  data-independent ops); ``masked_select`` keeps every element; ``unique`` finds every element
  distinct.
* an integer ``.item()`` (``int()``, ``range()``, a length) is the largest value it can hold when
  that is known from the ops that made it: a count of a boolean mask (``mask.sum()``), its
  ``max``/``min`` and casts. Otherwise it raises :class:`UnboundedValue`.
* a data-dependent boolean (``if mask.any():``, ``torch.equal``) is a *decision*: ``True`` first
  (the route that does the work), and :func:`explore` runs the forward again with the last
  ``True`` turned ``False`` when a route raises (``if x.isnan().any(): raise``).

A torch-function mode acts on the Python calls, before any tracer sees them, so export (whose
fake tensors would turn ``nonzero`` into an unbacked size and then refuse to guard on it) and
``make_fx`` (whose meta ``nonzero`` is unimplemented) both record plain ``arange`` indices; a
``torch.library`` kernel for the ``Meta`` key would reach neither export's fake tensors nor the
Python-level booleans, and would replace a kernel for every thread while it is registered.

At the upper bound every expert gets tokens and every masked element is kept, so a loop over the
experts hit uses every expert's weights, with the ops a real input would use. A boolean decision
takes one route only: a parameter used only on the other route is not in the graph, and
``auto_partition`` names it in its warning. Nothing is global: the mode and the
``meta_nonzero_assume_all_nonzero`` setting of ``torch.fx.experimental._config`` (for a
``nonzero`` called from inside another op) last as long as the ``with`` block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any, TypeVar

import torch
from torch.fx.experimental import _config as fx_config
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.weak import WeakIdKeyDictionary

T = TypeVar("T")

#: how many forwards :func:`explore` runs before it gives up on the decisions
MAX_ROUTES = 8


class UnboundedValue(RuntimeError):
    """A data-dependent value of a meta tensor whose upper bound is unknown."""


def _is_meta(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.device.type == "meta"


def _all_indices(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``x.nonzero(as_tuple=True)`` if every element of ``x`` were nonzero."""
    if x.dim() == 0:
        return (torch.zeros(1, dtype=torch.long, device=x.device),)
    ranges = [torch.arange(n, device=x.device) for n in x.shape]
    return tuple(g.reshape(-1) for g in torch.meshgrid(*ranges, indexing="ij"))


def _nonzero(x: torch.Tensor, *, as_tuple: bool = False, **kwargs: Any) -> Any:
    if kwargs:
        return NotImplemented
    indices = _all_indices(x)
    if as_tuple:
        return indices
    if x.dim() == 0:
        return torch.zeros(1, 0, dtype=torch.long, device=x.device)
    return torch.stack(indices, dim=1)


def _where(cond: torch.Tensor, *rest: Any, **kwargs: Any) -> Any:
    return NotImplemented if rest or kwargs else _all_indices(cond)


def _masked_select(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    shape = torch.broadcast_shapes(x.shape, mask.shape)
    return x.expand(shape).reshape(-1)


def _unique(
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
    if _is_meta(index) and index.dtype in (torch.bool, torch.uint8):
        return _all_indices(index)
    return (index,)


def _mask_free(index: Any) -> Any:
    """An index with every boolean meta mask replaced by the indices of all its elements."""
    if isinstance(index, tuple):
        return tuple(part for i in index for part in _expanded(i))
    parts = _expanded(index)
    return index if parts[0] is index else parts


def _tensor_index(index: Any) -> list[torch.Tensor | None] | None:
    """``x[e]`` with a 0-d integer meta tensor ``e`` (an expert id) as the indices of an
    ``aten.index``, which keeps ``e`` a tensor: ``__getitem__`` would read its value. ``None``
    when the index has no such tensor or has parts ``aten.index`` can't take (a partial slice)."""
    parts = index if isinstance(index, tuple) else (index,)
    if not any(_is_meta(p) and p.dim() == 0 and not p.is_floating_point() for p in parts):
        return None
    if not all(isinstance(p, torch.Tensor) or p == slice(None) for p in parts):
        return None
    return [p if isinstance(p, torch.Tensor) else None for p in parts]


def _getitem(x: torch.Tensor, index: Any) -> torch.Tensor:
    index = _mask_free(index)
    indices = _tensor_index(index)
    return x[index] if indices is None else torch.ops.aten.index.Tensor(x, indices)


#: index tensors made by this mode (every index) have their values recorded up to this size
_MAX_VALUES = 1 << 16
_MAKES_INDICES = {torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere, torch.where}
# ops that move values without computing new ones: an index's pieces keep known values
_MOVES_VALUES = {
    torch.Tensor.unbind,
    torch.unbind,
    torch.Tensor.select,
    torch.Tensor.squeeze,
    torch.Tensor.unsqueeze,
    torch.Tensor.view,
    torch.Tensor.reshape,
    torch.Tensor.flatten,
    torch.Tensor.to,
    torch.Tensor.long,
    torch.Tensor.clone,
    torch.Tensor.contiguous,
    torch.Tensor.detach,
}


@contextmanager
def _outside_tracing() -> Iterator[None]:
    """Compute on real (CPU) tensors, unseen by the tracer's modes."""
    with _disable_current_modes(), torch._C.DisableTorchFunction():
        yield


# ops whose integer result is bounded by their (first) input's bound
_KEEPS_BOUND = {
    torch.Tensor.max,
    torch.Tensor.min,
    torch.Tensor.amax,
    torch.Tensor.amin,
    torch.max,
    torch.min,
    torch.amax,
    torch.amin,
    torch.Tensor.to,
    torch.Tensor.long,
    torch.Tensor.int,
    torch.Tensor.type_as,
    torch.Tensor.view,
    torch.Tensor.reshape,
    torch.Tensor.flatten,
    torch.Tensor.squeeze,
    torch.Tensor.unsqueeze,
    torch.Tensor.select,
    torch.Tensor.clone,
    torch.Tensor.contiguous,
    torch.Tensor.detach,
}
# ops whose integer result is at most their input's bound times the count of elements summed
_SUMS = {torch.Tensor.sum, torch.sum}
# ops that count elements: at most the count of elements counted
_COUNTS = {torch.Tensor.count_nonzero, torch.count_nonzero}


class UpperBounds(TorchFunctionMode):
    """Answers data-dependent calls on meta tensors with their upper bound (see the module).

    ``script``: the decisions to take first, in order (after it, ``True``); :attr:`decisions`
    records the ones taken.
    """

    def __init__(self, script: Sequence[bool] = ()) -> None:
        super().__init__()
        self.script = list(script)
        self.decisions: list[bool] = []
        self._bounds: WeakIdKeyDictionary = WeakIdKeyDictionary()
        #: exact values of the index tensors this mode made (every index), and of their pieces
        self._values: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._settings = ExitStack()
        self._handlers: dict[Callable[..., Any], Callable[..., Any]] = {
            torch.nonzero: _nonzero,
            torch.Tensor.nonzero: _nonzero,
            torch.argwhere: lambda x: _nonzero(x),
            torch.Tensor.argwhere: lambda x: _nonzero(x),
            torch.where: _where,
            torch.masked_select: _masked_select,
            torch.Tensor.masked_select: _masked_select,
            torch.unique: _unique,
            torch.Tensor.unique: _unique,
            torch.Tensor.__getitem__: _getitem,
            torch.Tensor.__setitem__: self._setitem,
            torch.Tensor.__bool__: lambda x: self.decide(),
            torch.is_nonzero: lambda x: self.decide(),
            torch.equal: self._equal,
            torch.Tensor.equal: self._equal,
            torch.Tensor.item: self._scalar,
            torch.Tensor.__int__: lambda x: int(self._scalar(x)),
            torch.Tensor.__index__: lambda x: int(self._scalar(x)),
            torch.Tensor.tolist: self._tolist,
            torch.Tensor.__format__: self._format,
        }

    def __enter__(self) -> UpperBounds:
        self.decisions = []  # a tracer may run the forward more than once: each run replays the script
        # ``patch`` is added to the config module when torch installs it
        setting = fx_config.patch(meta_nonzero_assume_all_nonzero=True)  # pyright: ignore[reportAttributeAccessIssue]
        self._settings.enter_context(setting)
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self._settings.close()

    # ---- decisions and bounds ---------------------------------------------------------------
    def decide(self) -> bool:
        """The next data-dependent boolean: from the script, else ``True``."""
        step = len(self.decisions)
        choice = self.script[step] if step < len(self.script) else True
        self.decisions.append(choice)
        return choice

    def bound(self, x: torch.Tensor) -> int | None:
        """The largest value an integer or boolean tensor can hold, if known."""
        if x in self._values:
            with _outside_tracing():
                values = self._values[x]
                return int(values.max()) if values.numel() else 0
        if x.dtype == torch.bool:
            return 1
        return self._bounds.get(x)

    def _equal(self, a: torch.Tensor, b: torch.Tensor) -> bool:
        return a.shape == b.shape and self.decide()

    def _scalar(self, x: torch.Tensor) -> bool | int:
        if x.numel() != 1:
            raise UnboundedValue(f"a data-dependent value of a meta tensor of shape {tuple(x.shape)}")
        if x in self._values:  # an index this mode made: its value is known
            with _outside_tracing():
                return self._values[x].item()
        if x.dtype == torch.bool:
            return self.decide()
        bound = self.bound(x)
        if bound is None or x.is_floating_point() or x.is_complex():
            raise UnboundedValue(
                f"a data-dependent {x.dtype} value of a meta tensor, with no known upper bound"
            )
        return bound

    def _tolist(self, x: torch.Tensor) -> Any:
        if x in self._values:
            with _outside_tracing():
                return self._values[x].tolist()
        if x.dim() == 0:
            return self._scalar(x)
        return [self._tolist(row) for row in x.unbind(0)]

    def _format(self, x: torch.Tensor, spec: str) -> Any:
        return format(self._scalar(x), spec) if x.dim() == 0 else NotImplemented

    def _setitem(self, x: torch.Tensor, index: Any, value: Any) -> None:
        index = _mask_free(index)
        indices = _tensor_index(index)
        if indices is None:
            x[index] = value
        else:
            torch.ops.aten.index_put_.default(
                x, indices, torch.as_tensor(value, dtype=x.dtype, device=x.device)
            )

    def _record(self, func: Callable[..., Any], args: tuple, out: Any) -> None:
        """Record the upper bound of an integer result from its input's."""
        if not (_is_meta(out) and not out.is_floating_point() and args and isinstance(args[0], torch.Tensor)):
            return
        counted = max(1, args[0].numel() // max(1, out.numel()))  # elements reduced into one
        if func in _COUNTS:
            self._bounds[out] = counted
            return
        bound = self.bound(args[0])
        if bound is None:
            return
        if func in _SUMS:
            self._bounds[out] = bound * counted
        elif func in _KEEPS_BOUND or func is torch.Tensor.__getitem__:
            self._bounds[out] = bound

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        handler = self._handlers.get(func)
        if func is torch.Tensor.__getitem__:  # looked up now: a tracer may have wrapped it
            handler = _getitem
        out: Any = NotImplemented
        if handler is not None and args and _is_meta(args[0]):
            out = handler(*args, **kwargs)
        handled = out is not NotImplemented
        if not handled:
            out = func(*args, **kwargs)
        self._record(func, args, out[0] if isinstance(out, tuple) and out else out)
        if (func in _MAKES_INDICES and handled) or func in _MOVES_VALUES or func is torch.Tensor.__getitem__:
            self._follow_values(func, handler if func in _MAKES_INDICES else func, args, kwargs, out)
        return out

    def _follow_values(self, func: Callable[..., Any], run: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Record the exact values of an index tensor made here, or of a piece of one."""
        inputs = [a for a in pytree.tree_leaves((args, kwargs)) if _is_meta(a)]
        if func in _MAKES_INDICES:
            if args[0].numel() > _MAX_VALUES:
                return
            real = lambda a: torch.ones(a.shape, dtype=a.dtype) if _is_meta(a) else a  # noqa: E731
        elif inputs and all(a in self._values for a in inputs):
            real = lambda a: self._values[a] if _is_meta(a) else a  # noqa: E731
        else:
            return
        with _outside_tracing():
            values = run(*pytree.tree_map(real, args), **pytree.tree_map(real, kwargs))
        outs, found = pytree.tree_leaves(out), pytree.tree_leaves(values)
        if len(outs) == len(found):
            for meta, value in zip(outs, found):
                if _is_meta(meta) and isinstance(value, torch.Tensor) and value.shape == meta.shape:
                    self._values[meta] = value


def explore(run: Callable[[UpperBounds], T], routes: int = MAX_ROUTES) -> T:
    """``run(mode)`` (which enters ``mode``), taking other routes while it raises.

    The first run decides every data-dependent boolean ``True``; after a failure, the last
    ``True`` decision is turned ``False`` (the ones after it are decided afresh), depth first,
    until a run succeeds or ``routes`` runs failed. The last error is raised.
    """
    script: list[bool] = []
    for tries in range(1, routes + 1):
        mode = UpperBounds(script)
        try:
            return run(mode)
        except Exception:
            taken = mode.decisions
            last = next((i for i in reversed(range(len(taken))) if taken[i]), None)
            if last is None or tries == routes:
                raise
            script = [*taken[:last], False]
    raise AssertionError("unreachable")
