"""The module that owns an optimizer's bare parameters, found from the forward passes it sees.

``AdamMini(model.parameters())`` (LightningCLI, litgpt, the Hugging Face ``Trainer``, Fabric,
accelerate, most hand-written loops) receives tensors without names or model. Built so, it starts
an :class:`OwnerWatch`: two global module hooks (``torch.nn.modules.module``'s public
``register_module_forward_pre_hook`` / ``register_module_forward_hook``) that watch every module
call until the first ``step()``:

* a call of a module whose parameters include all of the optimizer's is an *owning* call;
* inside it, owning calls of wrappers that hold no parameters beside the module they call (DDP,
  Fabric's ``_FabricModule``, ``torch.compile``'s ``OptimizedModule``, a LightningModule around
  its network) are looked through: the innermost of the chain is the owner;
* the owner's arguments are kept as meta tensors (shapes and dtypes: no memory, nothing of the
  batch kept alive), and only a weak reference to the module.

The first ``step()`` binds to the owner (tracing it on meta) and the hooks are removed. Nothing is
guessed: no forward, no module holding the parameters, parameters spread over modules none of
which holds them all, or two different owners raise :class:`OwnerNotFoundError` saying what to do.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils import _pytree as pytree

_HOW_TO_BIND = (
    "Bind it yourself before the first step: optimizer.bind(model), with example_inputs=(x,) to "
    "trace it (or build AdamMini(model, example_inputs=(x,))); in a Lightning Trainer, add "
    "lightning_adam_mini.AdamMiniCallback() to its callbacks"
)


class OwnerNotFoundError(RuntimeError):
    """The forward passes seen do not tell, without guessing, which module owns the parameters."""


@dataclass
class OwningCall:
    """A call of a module holding all of the optimizer's parameters: the module (weakly) and its
    arguments as meta tensors."""

    module: weakref.ref[nn.Module]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    type_name: str


def _as_meta(tree: Any) -> Any:
    return pytree.tree_map(lambda x: torch.empty_like(x, device="meta") if isinstance(x, Tensor) else x, tree)


def _holds_params(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def is_wrapper(outer: nn.Module, inner: nn.Module) -> bool:
    """Whether ``outer`` holds ``inner`` and no parameter outside it (DDP, ``_FabricModule``,
    ``OptimizedModule``, a LightningModule around its network)."""
    if outer is inner:
        return False
    inside = {id(m) for m in inner.modules()}
    return _contains(outer, inner) and all(id(m) in inside or not _holds_params(m) for m in outer.modules())


class OwnerWatch:
    """Watches module calls for the owner of ``params`` (see the module docstring); call
    :meth:`owner` at the first step, :meth:`close` once bound."""

    def __init__(self, params: Iterable[Tensor]) -> None:
        self._ids = frozenset(id(p) for p in params)
        # by id, not by module: a module class with its own __eq__ may be unhashable
        self._held: dict[int, int] = {}
        self._stack: list[nn.Module] = []  # owning calls in progress (strong only during a call)
        self._chain: dict[int, OwningCall] = {}  # depth -> first owning call at that depth
        self._owners: list[OwningCall] = []
        self._partial: list[weakref.ref[nn.Module]] = []  # modules holding some of them
        self._calls = 0
        self._handles = [
            register_module_forward_pre_hook(self._before_call),
            register_module_forward_hook(self._after_call, with_kwargs=True, always_call=True),
        ]

    def close(self) -> None:
        """Remove the hooks (idempotent); the watch keeps what it saw."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._stack.clear()

    # ---- hooks --------------------------------------------------------------------------------
    def _count_held(self, module: nn.Module) -> int:
        held = self._held.get(id(module))
        if held is None:
            held = sum(1 for p in module.parameters() if id(p) in self._ids)
            self._held[id(module)] = held
            if held and held < len(self._ids):
                self._partial.append(weakref.ref(module))
        return held

    def _before_call(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self._calls += 1
        held = self._count_held(module)
        if held == len(self._ids):
            self._stack.append(module)

    def _after_call(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        if not self._stack or self._stack[-1] is not module:
            return
        self._stack.pop()
        depth = len(self._stack)
        if depth not in self._chain:
            self._chain[depth] = OwningCall(
                weakref.ref(module), _as_meta(args), _as_meta(dict(kwargs)), type(module).__name__
            )
        if depth == 0:
            self._end_chain()

    def _end_chain(self) -> None:
        calls = [self._chain[d] for d in sorted(self._chain)]
        self._chain = {}
        i = 0
        while i + 1 < len(calls):
            outer, inner = calls[i].module(), calls[i + 1].module()
            if outer is None or inner is None or not is_wrapper(outer, inner):
                break
            i += 1
        owner = calls[i]
        if not any(seen.module() is owner.module() for seen in self._owners):
            self._owners.append(owner)

    # ---- the answer ---------------------------------------------------------------------------
    def owner(self, what: str) -> tuple[nn.Module, tuple[Any, ...], dict[str, Any]]:
        """The owner and its meta arguments; raises :class:`OwnerNotFoundError` otherwise."""
        where = f"AdamMini.{what}: this optimizer was built from bare tensors (model.parameters())"
        if len(self._owners) > 1:
            names = ", ".join(call.type_name for call in self._owners)
            raise OwnerNotFoundError(
                f"{where}, and {len(self._owners)} different modules holding all of them were called "
                f"before the first step ({names}), so it can't tell which one's forward to partition. "
                + _HOW_TO_BIND
            )
        if self._owners:
            call = self._owners[0]
            module = call.module()
            if module is None:
                raise OwnerNotFoundError(
                    f"{where}; the {call.type_name} whose forward it saw was deleted before the first "
                    "step. " + _HOW_TO_BIND
                )
            return module, call.args, call.kwargs
        if self._calls == 0:
            raise OwnerNotFoundError(
                f"{where} and no module was called before its first step, so it can't tell which "
                "model they belong to. Run the model's forward before optimizer.step(), or: " + _HOW_TO_BIND
            )
        holders = [m for m in (ref() for ref in self._partial) if m is not None]
        partial = [m for m in holders if not any(o is not m and _contains(o, m) for o in holders)]
        if partial:
            parts = ", ".join(f"{type(m).__name__} ({self._count_held(m)})" for m in partial)
            raise OwnerNotFoundError(
                f"{where}, and no module called before the first step holds all {len(self._ids)} of "
                f"them: they are spread over {parts}. Bind to the module that holds them all: "
                "optimizer.bind(model, example_inputs=(x,)), or AdamMini(model, example_inputs=(x,))"
            )
        raise OwnerNotFoundError(
            f"{where}, and none of the {self._calls} module calls before the first step was of a "
            "module holding them (tensors outside any nn.Module, or a functional forward). Give "
            "them names and a plan: AdamMini(list_of_(name, tensor)_pairs, partition=plan), or: "
            + _HOW_TO_BIND
        )
