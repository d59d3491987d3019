"""`AdamMini`: a thin ``torch.optim.Optimizer`` over a :class:`~partitioners.PartitionPlan`.

The class validates, groups and owns state; the math lives in :func:`.functional.adam_mini`.
"""

from __future__ import annotations

import math
import numbers
import os
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from partitioners import PartitionPlan, PlanMismatchError

from .binding import name_param_groups, resolve_plan
from .blocks import BlockReduction, v_dtype
from .compiled import compile_private, resolve_compile
from .functional import adam_mini
from .in_backward import InBackwardSteps
from .owner import OwnerWatch
from .row_kernel import resolve_fused
from .sharded import ShardedBlockReduction, build_reduction, local_tensor, new_exp_avg_sq

ParamsLike = nn.Module | Iterable[Tensor] | Iterable[tuple[str, Tensor]] | Iterable[dict[str, Any]]


def _is_real(value: Any) -> bool:
    """A real number of any kind (Python, numpy, ...), but not a bool (numpy's bool is no number)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_hyperparameters(lr: Any, betas: Any, eps: Any, weight_decay: Any) -> None:
    """Raise ``ValueError`` naming the first invalid hyperparameter."""
    if isinstance(lr, Tensor):
        if lr.numel() != 1 or lr.dtype == torch.bool or lr.is_complex():
            raise ValueError(
                f"AdamMini: lr as a tensor must hold one real value, got shape {tuple(lr.shape)} {lr.dtype}"
            )
        lr = lr.item()
    checks = (("lr", lr), ("eps", eps), ("weight_decay", weight_decay))
    for name, value in checks:
        if not _is_real(value) or not math.isfinite(value) or value < 0:
            raise ValueError(f"AdamMini: {name} must be a finite real number >= 0, got {value!r}")
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"AdamMini: betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        if not _is_real(b) or not math.isfinite(b) or not 0.0 <= b < 1.0:
            raise ValueError(f"AdamMini: betas[{i}] must be a real number in [0, 1), got {b!r}")


def decay_matrices(name: str, param: Tensor) -> bool:
    """The default ``decay_filter``: decay parameters with two or more dimensions (weights,
    embeddings), not biases, norm scales or scalars."""
    return param.ndim >= 2


def check_step_options(compile: Any, nonfinite: Any, step_in_backward: Any, fused: Any = "auto") -> None:
    """Raise ``ValueError`` naming the first invalid step option."""
    if compile not in (True, False, "auto"):
        raise ValueError(f"AdamMini: compile must be True, False or 'auto', got {compile!r}")
    if fused not in (True, False, "auto"):
        raise ValueError(f"AdamMini: fused must be True, False or 'auto', got {fused!r}")
    if nonfinite not in ("propagate", "skip"):
        raise ValueError(f"AdamMini: nonfinite must be 'propagate' or 'skip', got {nonfinite!r}")
    if step_in_backward not in (True, False):
        raise ValueError(f"AdamMini: step_in_backward must be True or False, got {step_in_backward!r}")
    if step_in_backward and compile is True:
        raise ValueError(
            "AdamMini: step_in_backward=True updates one parameter at a time from its gradient "
            "hook and runs eagerly; drop compile=True"
        )


class AdamMini(Optimizer):
    r"""Adam-mini (Zhang et al., ICLR 2025): Adam's per-element first moment, one second moment
    per block of the parameter partition.

    .. math::
        p &\leftarrow p\,(1-\eta\lambda) \qquad (\text{params chosen by decay\_filter}) \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g \\
        v_b &\leftarrow \beta_2 v_b + (1-\beta_2)\,\operatorname{mean}_{i\in b} g_i^2 \\
        p_i &\leftarrow p_i - \frac{\eta}{1-\beta_1^t}\,\frac{m_i}{\sqrt{v_b/(1-\beta_2^t)}+\epsilon}
        \qquad (i \in b)

    Args:
        params: the model (its trainable parameters are optimized), ``model.named_parameters()``,
            or named param groups (dicts whose ``"params"`` are ``(name, param)`` pairs). Bare
            tensors or groups of them (``model.parameters()``, as LightningCLI, litgpt, the
            Hugging Face ``Trainer``, Fabric and accelerate pass them) make an optimizer that binds
            itself at its first step to the module whose forward it saw use them (see
            :mod:`lightning_adam_mini.owner`); :meth:`bind` binds it explicitly before that.
        lr, betas, eps, weight_decay: as in ``torch.optim.AdamW`` (decoupled weight decay, applied
            only to the parameters ``decay_filter`` picks). Real numbers of any kind; ``lr`` may be
            a one-element tensor. Every param group owns its ``lr`` tensor, so LR schedulers act per
            group exactly as on ``AdamW`` and never recompile a compiled step.
        decay_filter: ``(name, param) -> bool``, which parameters weight decay applies to (as
            optax's ``mask``). Default :func:`decay_matrices`: parameters with two or more
            dimensions (not biases, norm scales, scalars). E.g. to spare the embeddings too:
            ``decay_filter=lambda name, p: p.ndim >= 2 and "emb" not in name``.
        partition: a :class:`~partitioners.PartitionPlan` or the path of a pinned YAML plan.
            Default for a model: ``auto_partition(model, example_inputs, example_kwargs)``.
        example_inputs, example_kwargs: arguments of ``model(...)`` used to trace the partition.
        exp_avg_dtype: dtype of the first moment ``m``; default: the parameter's dtype. Use
            ``torch.float32`` for fp32 state with low-precision params, ``torch.bfloat16`` to halve
            ``m`` for fp32 params. ``v`` is always fp32.
        compile: run the update through ``torch.compile(fullgraph=True)`` (one compilation per
            optimizer and param group, ~10-20 s on CPU). ``"auto"`` (default): compile when the
            parameters number at least 100M and Inductor can build here (a C++ compiler on
            CPU, Triton on CUDA), else run eagerly; never with ``step_in_backward``.
        fused: the one-pass row kernel (:mod:`.row_kernel`: each row reduced and updated while
            in cache, all parameters in one call; built with the system's C++ compiler on first
            use and cached). ``"auto"`` (default): for uncompiled CPU models of 10M+ parameters,
            when it builds (else a warning and the foreach path); ``True``: always, also inside
            a compiled step (error if it can't build); ``False``: never. Parameters it does not
            fit (other layouts, devices, dtypes; ``nonfinite="skip"``) take the foreach path.
        nonfinite: ``"propagate"`` (default, as AdamW: a NaN/inf gradient element reaches the
            state; here it makes its whole block's ``v`` non-finite at once) or ``"skip"``: a
            parameter whose gradient has a NaN/inf is not updated that step (``p``, ``m``, ``v``
            and its step count stay), counted in :attr:`nonfinite_skipped`. Compiled, the check
            costs no host sync.
        step_in_backward: update each parameter from its post-accumulate-grad hook the moment
            its gradient is complete, and free the gradient at once, so gradients never all
            exist together (exact: no block spans two parameters). Call ``step()`` once per
            iteration as usual: it applies nothing more and marks the end of the iteration.
            Incompatible with gradient accumulation (a second backward before ``step()`` raises)
            and with clipping by the global gradient norm (each update happens before the other
            gradients exist); per-parameter clipping may stand in. Not with ``compile=True``.
    """

    def __init__(
        self,
        params: ParamsLike,
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        partition: PartitionPlan | str | os.PathLike | None = None,
        example_inputs: tuple[Any, ...] | None = None,
        example_kwargs: dict[str, Any] | None = None,
        exp_avg_dtype: torch.dtype | None = None,
        compile: bool | Literal["auto"] = "auto",
        fused: bool | Literal["auto"] = "auto",
        nonfinite: str = "propagate",
        step_in_backward: bool = False,
        decay_filter: Callable[[str, Tensor], bool] = decay_matrices,
    ) -> None:
        check_hyperparameters(lr, betas, eps, weight_decay)
        check_step_options(compile, nonfinite, step_in_backward, fused)
        if not callable(decay_filter):
            raise TypeError(
                f"AdamMini: decay_filter must be a callable (name, param) -> bool, got {decay_filter!r}"
            )
        self.decay_filter = decay_filter
        self._decays: dict[str, bool] = {}
        if exp_avg_dtype is not None and not exp_avg_dtype.is_floating_point:
            raise ValueError(f"AdamMini: exp_avg_dtype must be a floating dtype, got {exp_avg_dtype}")
        groups, named, plan = self._resolve(params, partition, example_inputs, example_kwargs)
        if named is not None and plan is not None:  # _resolve gives both or neither (unbound)
            plan.check_params(named, allow_extra=not isinstance(params, nn.Module))
        self.plan: PartitionPlan | None = plan if named is not None else None
        self._pending_partition = partition if named is None else None
        self.exp_avg_dtype = exp_avg_dtype
        # lr stays as given here; add_param_group gives each group its own lr tensor.
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        super().__init__(groups, defaults)
        all_params = [p for g in self.param_groups for p in g["params"]]
        compile = resolve_compile(compile, all_params) and not step_in_backward
        self._update = compile_private(adam_mini) if compile else adam_mini  # own Dynamo cache
        self._row_step = resolve_fused(fused, all_params, compile)
        self._compiled = compile
        self._reductions: dict[str, BlockReduction | ShardedBlockReduction] = {}
        self._owner_watch: OwnerWatch | None = None
        self._state_to_load: dict[str, Any] | None = None  # loaded before bind(): applied by it
        if self.plan is None:
            self._owner_watch = OwnerWatch(p for g in self.param_groups for p in g["params"])
            weakref.finalize(self, self._owner_watch.close)
        self.nonfinite = nonfinite
        self._nonfinite_skips: dict[torch.device, Tensor] = {}
        self._in_backward = InBackwardSteps(self) if step_in_backward else None

    # ---- construction -------------------------------------------------------------------
    @staticmethod
    def _resolve(params, partition, example_inputs, example_kwargs):
        """Named param groups, the flat (name, param) list, and the plan."""
        if isinstance(params, nn.Module):
            named = [(n, p) for n, p in params.named_parameters() if p.requires_grad]
            return [{"params": named}], named, resolve_plan(params, partition, example_inputs, example_kwargs)
        items = list(params)
        if not items:
            raise ValueError("AdamMini got an empty parameter list")
        groups = [dict(g) for g in items] if isinstance(items[0], Mapping) else [{"params": items}]
        if all(isinstance(x, Tensor) for g in groups for x in g["params"]) and not any(
            "param_names" in g for g in groups
        ):
            return groups, None, None  # unbound: names and plan come with bind(module)
        named = []
        for g in groups:
            group_params = list(g["params"])
            if isinstance(g.get("param_names"), list):
                group_params = list(zip(g.pop("param_names"), group_params))
            if not all(isinstance(x, tuple) and len(x) == 2 for x in group_params):
                raise TypeError(
                    "AdamMini needs parameter names to apply a partition: pass the model, "
                    "model.named_parameters(), or param groups whose 'params' are (name, param) pairs"
                )
            g["params"] = group_params
            named.extend(group_params)
        if partition is None:
            raise ValueError(
                "AdamMini: with named parameters (not the model) pass partition= (a PartitionPlan, "
                "e.g. partitioners.auto_partition(model, example_inputs), or a YAML path)"
            )
        return groups, named, resolve_plan(None, partition)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """torch's ``add_param_group``; the group is checked fully (hyperparameters, names, plan)
        before it is added, so a refused group leaves the optimizer as it was."""
        for key in ("betas", "eps", "weight_decay"):
            param_group.setdefault(key, self.defaults[key])
        lr = param_group.get("lr", self.defaults["lr"])
        check_hyperparameters(lr, param_group["betas"], param_group["eps"], param_group["weight_decay"])
        if not isinstance(lr, Tensor):
            # A tensor lets a compiled step take lr as an input (no recompile when it changes).
            lr = torch.tensor(float(lr), dtype=torch.float64)
        elif lr is self.defaults["lr"]:
            lr = lr.clone()  # each group owns its lr: schedulers fill_ it per group
        param_group["lr"] = lr
        param_group["betas"] = tuple(float(b) for b in param_group["betas"])
        param_group["eps"] = float(param_group["eps"])
        param_group["weight_decay"] = float(param_group["weight_decay"])
        params = param_group["params"]
        param_group["params"] = params = [params] if isinstance(params, Tensor) else list(params)
        if not params:
            raise ValueError(
                f"AdamMini: param group {len(self.param_groups)} has no parameters (do all of the "
                "model's parameters have requires_grad=False?)"
            )
        if self.plan is not None:  # unbound: bind() names the groups
            named: list[tuple[str, Tensor]]
            if "param_names" in param_group:
                named = list(zip(param_group["param_names"], params))
            elif all(isinstance(x, tuple) and len(x) == 2 for x in params):
                named = cast(list[tuple[str, Tensor]], params)
            else:
                raise TypeError("AdamMini param groups need names: give (name, param) pairs")
            self.plan.check_params(named, allow_extra=True)
        super().add_param_group(param_group)
        in_backward: InBackwardSteps | None = getattr(self, "_in_backward", None)  # unset in __init__
        if in_backward is not None:
            in_backward.hook_group(self.param_groups[-1])

    @property
    def is_bound(self) -> bool:
        """Whether the parameters have names and a plan (always, unless built from bare tensors)."""
        return self.plan is not None

    def bind(
        self,
        module: nn.Module,
        partition: PartitionPlan | str | os.PathLike | None = None,
        example_inputs: tuple[Any, ...] | None = None,
        example_kwargs: dict[str, Any] | None = None,
        *,
        strategy: Any = None,
    ) -> AdamMini:
        """Name the bare parameters after ``module.named_parameters()`` and set the plan
        (:func:`~lightning_adam_mini.binding.resolve_plan`): the given ``partition`` (or the one
        given at construction), else ``auto_partition(module, example_inputs, example_kwargs)``,
        traced on rank 0 of ``strategy`` if given. Takes precedence over self-binding; a state
        loaded before binding is applied now. A bound optimizer is returned unchanged."""
        if self.plan is not None:
            return self
        named = name_param_groups(self.param_groups, module)
        if self._owner_watch is not None:
            self._owner_watch.close()  # before tracing: the trace's module calls are not the user's
        partition = partition if partition is not None else self._pending_partition
        plan = resolve_plan(module, partition, example_inputs, example_kwargs, strategy=strategy)
        plan.check_params(named, allow_extra=True)
        self.plan = plan
        self._owner_watch = None
        if self._state_to_load is not None:
            state_dict, self._state_to_load = self._state_to_load, None
            self.load_state_dict(state_dict)
        return self

    @property
    def _bound_plan(self) -> PartitionPlan:
        """The plan, where the optimizer must be bound already."""
        assert self.plan is not None, "AdamMini: not bound (call bind(module) first)"
        return self.plan

    def _require_bound(self, what: str) -> None:
        """Bind to the module whose forward used the parameters, if not bound yet (see
        :mod:`.owner`); raises :class:`~.owner.OwnerNotFoundError` when that can't be told."""
        if self.plan is not None:
            return
        assert self._owner_watch is not None  # every unbound optimizer watches
        module, args, kwargs = self._owner_watch.owner(what)
        self.bind(module, example_inputs=args, example_kwargs=kwargs)

    # ---- state --------------------------------------------------------------------------
    def _reduction(self, p: Tensor, name: str) -> BlockReduction | ShardedBlockReduction:
        red = self._reductions.get(name)
        if red is None:
            red = build_reduction(self._bound_plan[name].layout, p)
            self._reductions[name] = red
        return red

    def _init_group(
        self,
        group: dict[str, Any],
        names: list[str],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        steps: list[Tensor],
    ) -> bool:
        """Collect the params that have a gradient this step (state created on first use).

        Same contract as torch.optim's ``_init_group`` (fills the lists, returns a constant), so
        that a ``torch.compile``d ``step`` runs it once, eagerly, and treats state as static.
        """
        for name, p in zip(group["param_names"], group["params"]):
            g = p.grad
            if g is None:
                continue
            if g.is_sparse:
                raise RuntimeError(f"AdamMini does not support sparse gradients (parameter {name!r})")
            if torch.is_complex(p) or torch.is_complex(g):
                raise RuntimeError(
                    f"AdamMini does not support complex parameters ({name!r}); optimize "
                    "torch.view_as_real(param) instead"
                )
            red = self._reduction(p, name)
            if name not in self._decays:
                self._decays[name] = bool(self.decay_filter(name, p))
            state = self.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(
                    p, dtype=self.exp_avg_dtype or p.dtype, memory_format=torch.preserve_format
                )
                state["exp_avg_sq"] = new_exp_avg_sq(p, red)
            names.append(name)
            # FSDP2 DTensors: the math runs on this rank's shard (see .sharded).
            params.append(local_tensor(p))
            grads.append(local_tensor(g))
            exp_avgs.append(local_tensor(state["exp_avg"]))
            exp_avg_sqs.append(local_tensor(state["exp_avg_sq"]))
            steps.append(state["step"])
        return False

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One optimization step; ``closure`` (re-evaluating the loss) runs eagerly first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._require_bound("step")  # after the closure: its forward may be the first one
        tensor_lr = self._compiled or torch.compiler.is_compiling()
        for group in self.param_groups:
            names: list[str] = []
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            steps: list[Tensor] = []
            self._init_group(group, names, params, grads, exp_avgs, exp_avg_sqs, steps)
            self._apply(group, names, params, grads, exp_avgs, exp_avg_sqs, steps, tensor_lr)
        if self._in_backward is not None:
            self._in_backward.end_iteration()
        return loss

    @property
    def nonfinite_skipped(self) -> int:
        """How many parameter updates ``nonfinite="skip"`` has skipped so far (a host sync)."""
        return int(sum(c.item() for c in self._nonfinite_skips.values()))

    def _skip_counter(self, device: torch.device) -> Tensor:
        counter = self._nonfinite_skips.get(device)
        if counter is None:
            counter = self._nonfinite_skips[device] = torch.zeros((), dtype=torch.int64, device=device)
        return counter

    def _apply(self, group, names, params, grads, exp_avgs, exp_avg_sqs, steps, tensor_lr: bool) -> None:
        """The update of ``group``'s collected parameters (lists as filled by ``_init_group``)."""
        if not params:  # no gradients in this group (or all updated in backward already)
            return
        lr = group["lr"]
        if isinstance(lr, Tensor) and not tensor_lr:
            lr = lr.item()
        elif not isinstance(lr, Tensor) and tensor_lr:
            lr = torch.tensor(lr, dtype=torch.float64)
        beta1, beta2 = group["betas"]
        skips = [self._skip_counter(p.device) for p in params] if self.nonfinite == "skip" else None
        self._update(
            params,
            grads,
            exp_avgs,
            exp_avg_sqs,
            steps,
            [self._reductions[n] for n in names],
            [self._decays[n] for n in names],
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            nonfinite_skips=skips,
            row_step=self._row_step,
        )

    # ---- checkpoints --------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """torch's state dict; each param group also carries its params' plan entries (in the
        groups, not beside them, because torch.distributed.checkpoint keeps only "state" and
        "param_groups"). Unbound, it has no state yet: torch's (hyperparameters), or the state
        loaded before binding."""
        if self.plan is None:
            return self._state_to_load if self._state_to_load is not None else super().state_dict()
        sd = super().state_dict()
        for group in sd["param_groups"]:
            group["partition_plan"] = {n: self.plan[n].to_dict() for n in group["param_names"]}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.plan is None:  # before the first forward (resuming, or a framework's round trip)
            if state_dict["state"] or any("partition_plan" in g for g in state_dict["param_groups"]):
                self._state_to_load = state_dict  # bind() loads (and checks) it
            else:
                Optimizer.load_state_dict(self, state_dict)  # hyperparameters only
            return
        state_dict = dict(state_dict)
        groups = [dict(g) for g in state_dict["param_groups"]]
        group_plans = [g.pop("partition_plan", None) for g in groups]
        state_dict["param_groups"] = groups
        if not group_plans or any(gp is None for gp in group_plans):
            raise PlanMismatchError(
                "this optimizer state has no 'partition_plan' in its param groups: it was not "
                "saved by AdamMini"
            )
        self._check_same_plan(PartitionPlan.from_dict({n: e for gp in group_plans for n, e in gp.items()}))
        state_dict["param_groups"] = self._align_by_name(groups)
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        # torch casts floating state to the param's dtype; restore fp32 v and the chosen m dtype.
        for group, saved in zip(self.param_groups, state_dict["param_groups"]):
            for p, index in zip(group["params"], saved["params"]):
                old = saved_state.get(index)
                if old is None:
                    continue
                state = self.state[p]
                state["exp_avg"] = old["exp_avg"].to(
                    device=p.device, dtype=self.exp_avg_dtype or p.dtype, copy=True
                )
                state["exp_avg_sq"] = old["exp_avg_sq"].to(device=p.device, dtype=v_dtype(p.dtype), copy=True)
                state["step"] = old["step"].to(device=p.device, dtype=torch.float32, copy=True)

    def _align_by_name(self, saved_groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The saved groups with their params (state indices) put in this optimizer's name order:
        torch maps state by position, so a reordered group would get another param's state."""
        if len(saved_groups) != len(self.param_groups):
            raise PlanMismatchError(
                f"the checkpoint has {len(saved_groups)} param groups, this optimizer "
                f"{len(self.param_groups)}; build the optimizer with the same groups"
            )
        aligned = []
        for i, (saved, mine) in enumerate(zip(saved_groups, self.param_groups)):
            index_of = dict(zip(saved["param_names"], saved["params"]))
            for name in mine["param_names"]:
                if name not in index_of:
                    raise PlanMismatchError(
                        f"param group {i}: parameter {name!r} is not in the checkpoint's group {i}; "
                        "build the optimizer with the same param groups as the saved one"
                    )
            extra = sorted(set(index_of) - set(mine["param_names"]))
            if extra:
                raise PlanMismatchError(
                    f"param group {i}: the checkpoint's group has parameters this one lacks: {extra[:5]}"
                )
            names = list(mine["param_names"])
            aligned.append({**saved, "params": [index_of[n] for n in names], "param_names": names})
        return aligned

    def _check_same_plan(self, saved: PartitionPlan) -> None:
        mine = {n: self._bound_plan[n] for g in self.param_groups for n in g["param_names"]}
        if dict(saved) == mine:
            return
        for name, entry in mine.items():
            if name not in saved:
                raise PlanMismatchError(
                    f"checkpoint's partition plan has no parameter {name!r}: it is from another model"
                )
            if saved[name] != entry:
                raise PlanMismatchError(
                    f"checkpoint's plan differs at {name!r}: saved {saved[name]}, "
                    f"this optimizer {entry}; it is from another model or partition"
                )
        extra = [n for n in saved if n not in mine]
        raise PlanMismatchError(f"checkpoint's plan has parameters this optimizer lacks: {extra[:5]}")
