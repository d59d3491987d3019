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
* a 0-d integer tensor used as a size or a slice bound (``torch.arange(counts.max())``,
  ``x[:, :h // p]``), which torch reads below any torch function, is read the same way first.
* the values of the example inputs' integer tensors are known (:meth:`UpperBounds.know`): an op
  whose tensor inputs all have known values is also computed on them (on CPU), so lengths made
  from an image grid (``repeat_interleave(h * w, t).tolist()``) are exact, as is the size of an
  op that depends on them; a write in place forgets the values written into.
* a data-dependent boolean (``if mask.any():``, ``torch.equal``, ``pad_id in ids``) is a
  *decision*: ``True`` first (the route that does the work), and :func:`explore` runs the
  forward again with the last ``True`` turned ``False`` when a route raises
  (``if x.isnan().any(): raise``).

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
from typing import Any, TypeVar, cast

import torch
from torch.fx.experimental import _config as fx_config
from torch.fx.experimental.symbolic_shapes import is_concrete_int
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.weak import WeakIdKeyDictionary

from .bounded_ops import (
    getitem,
    is_meta,
    mask_free,
    masked_select_all,
    nonzero_all,
    tensor_index,
    unique_all,
    where_all,
)

T = TypeVar("T")

#: how many forwards :func:`explore` runs before it gives up on the decisions
MAX_ROUTES = 8


class UnboundedValue(RuntimeError):
    """A data-dependent value of a meta tensor whose upper bound is unknown."""


#: index tensors made by this mode (every index) have their values recorded up to this size
_MAX_VALUES = 1 << 16
_MAKES_INDICES = {torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere, torch.where}


_IN_PLACE_DUNDERS = frozenset(
    f"__i{op}__" for op in ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "and", "or", "xor")
) | {"__setitem__"}


def _mutates(func: Callable[..., Any], kwargs: dict) -> bool:
    """``func`` writes into its first argument (``add_``, ``x[i] = v``, ``+=``) or an ``out=``."""
    name = getattr(func, "__name__", "")
    return "out" in kwargs or name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.startswith("__"))


def _small_integers(x: Any) -> bool:
    """``x`` is a meta tensor of integers or booleans small enough to hold its values."""
    if not is_meta(x) or x.is_floating_point() or x.is_complex():
        return False
    numel = x.numel()
    return isinstance(numel, int) and numel <= _MAX_VALUES


def _cpu(x: Any) -> Any:
    """A device argument (``device=x.device``) as the CPU the values are computed on."""
    if isinstance(x, str):
        try:
            x = torch.device(x)
        except RuntimeError:
            return x
    return torch.device("cpu") if isinstance(x, torch.device) else x


@contextmanager
def _outside_tracing() -> Iterator[None]:
    """Compute on real (CPU) tensors, unseen by the tracer's modes."""
    with _disable_current_modes(), torch._C.DisableTorchFunction():
        yield


def _run_outside(run: Callable[..., Any], args: tuple, kwargs: dict, real: Callable[[Any], Any]) -> Any:
    """``run`` on CPU stand-ins (``real`` of each leaf), unseen by the tracers; ``None`` if it
    raises."""
    try:
        with _outside_tracing():
            return run(*pytree.tree_map(real, args), **pytree.tree_map(real, kwargs))
    except Exception:
        return None


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
# ops that take numbers (sizes, ends, lengths) and accept a 0-d tensor for one, reading its value
# where no torch function sees it
_TAKES_NUMBERS = {
    torch.arange,
    torch.linspace,
    torch.zeros,
    torch.ones,
    torch.empty,
    torch.full,
    torch.narrow,
    torch.Tensor.new_zeros,
    torch.Tensor.new_ones,
    torch.Tensor.new_empty,
    torch.Tensor.new_full,
    torch.Tensor.view,
    torch.Tensor.reshape,
    torch.Tensor.expand,
    torch.Tensor.repeat,
    torch.Tensor.narrow,
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
            torch.nonzero: nonzero_all,
            torch.Tensor.nonzero: nonzero_all,
            torch.argwhere: lambda x: nonzero_all(x),
            torch.Tensor.argwhere: lambda x: nonzero_all(x),
            torch.where: where_all,
            torch.masked_select: masked_select_all,
            torch.Tensor.masked_select: masked_select_all,
            torch.unique: unique_all,
            torch.Tensor.unique: unique_all,
            torch.Tensor.__getitem__: getitem,
            torch.Tensor.__setitem__: self._setitem,
            torch.Tensor.__bool__: lambda x: self.decide(),
            torch.Tensor.__contains__: lambda x, element: self.decide(),
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
        index = mask_free(index)
        indices = tensor_index(index)
        if indices is None:
            x[index] = value
        else:
            torch.ops.aten.index_put_.default(
                x, indices, torch.as_tensor(value, dtype=x.dtype, device=x.device)
            )

    def _numbers(self, obj: Any) -> Any:
        """``obj`` with each 0-d integer meta tensor whose value or bound is known as that number
        (lists, tuples and slices looked into): a tensor used as a size or a slice bound."""
        if isinstance(obj, slice):
            return slice(self._numbers(obj.start), self._numbers(obj.stop), self._numbers(obj.step))
        if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
            return type(obj)([self._numbers(o) for o in obj])
        if isinstance(obj, dict):
            return {k: self._numbers(v) for k, v in obj.items()}
        if (
            isinstance(obj, torch.Tensor)
            and is_meta(obj)
            and obj.dim() == 0
            and not (obj.is_floating_point() or obj.is_complex() or obj.dtype == torch.bool)
            and self.bound(obj) is not None
        ):
            return int(self._scalar(obj))
        return obj

    def _slice_numbers(self, index: Any) -> Any:
        """A ``__getitem__`` index with its slices' tensor bounds as numbers (a 0-d tensor used
        as the index itself stays a tensor: an expert pick)."""
        if isinstance(index, tuple):
            return tuple(self._numbers(i) if isinstance(i, slice) else i for i in index)
        return self._numbers(index) if isinstance(index, slice) else index

    def _record(self, func: Callable[..., Any], args: tuple, out: Any) -> None:
        """Record the upper bound of an integer result from its input's."""
        if not (is_meta(out) and not out.is_floating_point() and args and isinstance(args[0], torch.Tensor)):
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
        if func in _TAKES_NUMBERS:
            args, kwargs = self._numbers(args), cast(dict, self._numbers(kwargs))
        elif func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__) and len(args) > 1:
            args = (args[0], self._slice_numbers(args[1]), *args[2:])
        handler = self._handlers.get(func)
        if func is torch.Tensor.__getitem__:  # looked up now: a tracer may have wrapped it
            handler = getitem
        out: Any = NotImplemented
        if handler is not None and args and is_meta(args[0]):
            out = handler(*args, **kwargs)
        handled = out is not NotImplemented
        if not handled:
            try:
                out = func(*args, **kwargs)
            except Exception:  # no meta kernel for a size that depends on values (repeat_interleave)
                out = self._from_values(func, args, kwargs)
                if out is None:
                    raise
            if is_meta(out) and not all(is_concrete_int(n) for n in out.shape):
                exact = self._from_values(func, args, kwargs)
                out = out if exact is None else exact
        self._record(func, args, out[0] if isinstance(out, tuple) and out else out)
        if func in _MAKES_INDICES and handled:
            self._follow_values(func, handler, args, kwargs, out)
        elif func is not torch.Tensor.__getitem__ and _mutates(func, kwargs):  # (a tracer's wrapper)
            self._forget(args[0] if args else None)
        else:
            self._follow_values(func, func, args, kwargs, out)
        return out

    def know(self, x: torch.Tensor, values: torch.Tensor) -> None:
        """Record the exact values of ``x`` (an example input's): data-dependent code on it then
        computes with them instead of bounds."""
        self._values[x] = values

    def _from_values(self, func: Callable[..., Any], args: tuple, kwargs: dict) -> torch.Tensor | None:
        """``func``'s result as a meta tensor of its exact shape, from its inputs' known values
        (``None`` when they are not all known): the size a meta kernel can't give."""
        inputs = [a for a in pytree.tree_leaves((args, kwargs)) if is_meta(a)]
        if not inputs or not all(a in self._values for a in inputs):
            return None
        values = _run_outside(func, args, kwargs, self._known)
        if not isinstance(values, torch.Tensor):
            return None
        out = torch.empty(values.shape, dtype=values.dtype, device="meta")
        self._values[out] = values
        return out

    def _known(self, a: Any) -> Any:
        """A meta leaf's known values (a CPU tensor); any other leaf on the CPU."""
        return self._values[a] if is_meta(a) else _cpu(a)

    def _forget(self, x: Any) -> None:
        """``x`` is written in place: its known values, and those of every view sharing them, are
        no longer known."""
        if not (is_meta(x) and x in self._values):
            return
        with _outside_tracing():
            storage = self._values[x].untyped_storage().data_ptr()
            for known in [k for k, v in self._values.items() if v.untyped_storage().data_ptr() == storage]:
                del self._values[known]

    def _follow_values(self, func: Callable[..., Any], run: Any, args: tuple, kwargs: dict, out: Any) -> None:
        """Record the exact values of an index tensor made here, or of a piece of one."""
        inputs = [a for a in pytree.tree_leaves((args, kwargs)) if is_meta(a)]
        outs = pytree.tree_leaves(out)
        if func in _MAKES_INDICES:
            numel = args[0].numel()
            if not isinstance(numel, int) or numel > _MAX_VALUES:  # a symbolic size: no values
                return
            real = lambda a: torch.ones(a.shape, dtype=a.dtype) if is_meta(a) else _cpu(a)  # noqa: E731
        elif all(a in self._values for a in inputs) and any(_small_integers(o) for o in outs):
            real = self._known
        else:
            return
        values = _run_outside(run, args, kwargs, real)
        if values is None:  # an op that doesn't run on CPU tensors: its values stay unknown
            return
        found = pytree.tree_leaves(values)
        if len(outs) == len(found):
            for meta, value in zip(outs, found):
                if _small_integers(meta) and isinstance(value, torch.Tensor) and value.shape == meta.shape:
                    self._values[meta] = value


def example_values(originals: Any, metas: Any) -> list[tuple[int, torch.Tensor]]:
    """(position, values) of each small integer tensor among the flattened ``originals`` that has
    values (not on ``meta``): the example inputs' values, for :meth:`UpperBounds.know` on the meta
    leaf at that position of the flattened ``metas`` (``torch.Size`` leaves count as one)."""
    leaves = pytree.tree_leaves(originals, is_leaf=lambda x: isinstance(x, torch.Size))
    out = []
    for i, (leaf, meta) in enumerate(zip(leaves, pytree.tree_leaves(metas))):
        if isinstance(leaf, torch.Tensor) and leaf.device.type != "meta" and _small_integers(meta):
            out.append((i, leaf.detach().cpu().clone()))
    return out


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
