"""The Adam-mini update as one pure function over lists of tensors (foreach ops throughout).

The same function runs eagerly (hyperparameters as Python floats) and under ``torch.compile``
(``lr`` as a 0-d tensor, so a scheduler changing it never recompiles). Per parameter it reads
``p, g, m`` (plus ``g`` once more for the block reduction) and writes ``p, m``; ``v`` and the
per-block denominators are ~0.1% of the parameter's size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple, cast

import torch
from torch import Tensor
from torch.optim import Optimizer

from .reduction import Reduction, block_mean_squares
from .row_kernel import RowStep

# The foreach ops are typed in torch's stubs but left out of ``torch.__all__``, so pyright calls
# them private; these aliases are the same functions with the stubs' signatures.
_foreach_add_ = torch._foreach_add_  # pyright: ignore[reportPrivateImportUsage]
_foreach_addcdiv_ = torch._foreach_addcdiv_  # pyright: ignore[reportPrivateImportUsage]
_foreach_div_ = torch._foreach_div_  # pyright: ignore[reportPrivateImportUsage]
_foreach_expm1_ = torch._foreach_expm1_  # pyright: ignore[reportPrivateImportUsage]
_foreach_lerp_ = torch._foreach_lerp_  # pyright: ignore[reportPrivateImportUsage]
_foreach_mul = torch._foreach_mul  # pyright: ignore[reportPrivateImportUsage]
_foreach_mul_ = torch._foreach_mul_  # pyright: ignore[reportPrivateImportUsage]
_foreach_neg_ = torch._foreach_neg_  # pyright: ignore[reportPrivateImportUsage]
_foreach_sqrt = torch._foreach_sqrt  # pyright: ignore[reportPrivateImportUsage]
_foreach_sqrt_ = torch._foreach_sqrt_  # pyright: ignore[reportPrivateImportUsage]


def adam_mini(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
    reductions: Sequence[Reduction],
    decayed: Sequence[bool],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    nonfinite_skips: list[Tensor] | None = None,
    row_step: RowStep | None = None,
) -> None:
    r"""One Adam-mini step, in place (foreach ops per device and dtype).

    .. math::
        p &\leftarrow p\,(1-\eta\lambda) \quad (\text{decayed params only}) \\
        m &\leftarrow \beta_1 m + (1-\beta_1) g \\
        v_b &\leftarrow \beta_2 v_b + (1-\beta_2)\,\operatorname{mean}_{i\in b} g_i^2 \\
        p_i &\leftarrow p_i - \frac{\eta}{1-\beta_1^t}\,
              \frac{m_i}{\sqrt{v_b/(1-\beta_2^t)}+\epsilon}

    ``nonfinite_skips``: when given (one int64 counter per parameter, on its device; parameters
    on one device may share a counter), a parameter whose gradient holds a NaN or an infinity is
    left untouched (``p``, ``m``, ``v`` and its step count), and its device's counter goes up by
    one. Eager, this costs one host sync per device and dtype; compiled, none (the skip is a
    select inside the fused update).

    ``row_step``: the one-pass row kernel (:mod:`.row_kernel`; eager or compiled), used for the
    parameters it fits (fp32 ``p`` on CPU, fp32 or bf16 ``m``, blocks of whole rows along dim 0);
    the others take the foreach path.
    """
    tensor_lists = [params, grads, exp_avgs, exp_avg_sqs, steps]
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        cast(list[list[Tensor | None]], tensor_lists), with_indices=True
    )
    for lists, indices in grouped.values():
        d = _DeviceLists._make([*lists, [reductions[i] for i in indices], [decayed[i] for i in indices]])
        if row_step is not None and nonfinite_skips is None:
            fits = [_fits_row_kernel(*x) for x in zip(d.reductions, d.params, d.grads, d.exp_avgs)]
            kernel = d.select([i for i, fit in enumerate(fits) if fit])
            if kernel.params:  # all of them in one call: one pass over each row, steps counted too
                row_step(
                    kernel.params,
                    kernel.grads,
                    kernel.exp_avgs,
                    kernel.exp_avg_sqs,
                    kernel.steps,
                    [r.row_blocks for r in kernel.reductions],  # type: ignore[attr-defined]
                    lr if isinstance(lr, Tensor) else torch.tensor(lr, dtype=torch.float64),
                    beta1,
                    beta2,
                    eps,
                    [weight_decay if decay else 0.0 for decay in kernel.decayed],
                )
            rest = [i for i, fit in enumerate(fits) if not fit]
            if not rest:
                continue
            d = d.select(rest)

        # The block reduction reads g first, so that decay, the m update and the p update come
        # last and together (compiled: 1.32x -> 1.07x of fused AdamW's time, benchmarks/step.py).
        mean_sq = block_mean_squares(d.reductions, d.grads)  # FSDP2 shards: one all_reduce for all
        finite: list[Tensor] | None = None
        if nonfinite_skips is not None:
            # A NaN/inf in g makes its blocks' mean square non-finite: no extra pass over g.
            finite = [torch.isfinite(ms).all() for ms in mean_sq]
            nonfinite_skips[indices[0]].add_(len(finite) - torch.stack(finite).sum())
            if not torch.compiler.is_compiling():
                keep = [i for i, ok in enumerate(torch.stack(finite).tolist()) if ok]  # one host sync
                if not keep:
                    continue
                d, mean_sq = d.select(keep), _pick(mean_sq, keep)  # no comprehension: no cell for mean_sq
                finite = None
        if finite is None:
            _foreach_add_(d.steps, 1)
        else:  # compiled skip: every update below becomes a select on `finite`
            _foreach_add_(d.steps, [ok.to(t.dtype) for ok, t in zip(finite, d.steps)])
            mean_sq = [torch.where(ok, ms, v) for ok, ms, v in zip(finite, mean_sq, d.exp_avg_sqs)]
        _foreach_lerp_(d.exp_avg_sqs, mean_sq, 1 - beta2)
        del mean_sq

        denom = _denominators(d.exp_avg_sqs, d.steps, beta1, beta2, eps, lr)
        if finite is not None:  # m / inf = 0: a skipped parameter keeps its value
            denom = [torch.where(ok, x, math.inf) for ok, x in zip(finite, denom)]
        denom = [r.expand(x) for r, x in zip(d.reductions, denom)]

        if weight_decay != 0:
            to_decay = [(p, i) for i, (p, dec) in enumerate(zip(d.params, d.decayed)) if dec]
            if finite is not None:  # compiled skip: a skipped parameter is not decayed either
                for p, i in to_decay:
                    p.mul_(torch.where(finite[i], 1 - lr * weight_decay, 1.0))
            elif to_decay:
                _foreach_mul_([p for p, _ in to_decay], 1 - lr * weight_decay)

        _update_exp_avgs(d.exp_avgs, d.grads, 1 - beta1, finite)
        if d.exp_avgs[0].dtype == d.params[0].dtype or torch.compiler.is_compiling():
            _foreach_addcdiv_(d.params, d.exp_avgs, denom, value=-1.0)
        else:  # eager, m in another dtype: addcdiv would convert all of m at once
            for p, m, x in zip(d.params, d.exp_avgs, denom):
                for p_rows, m_rows, x_rows in _row_chunks(p, m, x.expand_as(p)):
                    p_rows.addcdiv_(m_rows, x_rows, value=-1.0)


class _DeviceLists(NamedTuple):
    """One device-and-dtype group's parallel lists (position ``i`` is one parameter)."""

    params: list[Tensor]
    grads: list[Tensor]
    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    steps: list[Tensor]
    reductions: list[Reduction]
    decayed: list[bool]

    def select(self, keep: list[int]) -> _DeviceLists:
        """Every list restricted to the positions in ``keep`` (eager paths only)."""
        return _DeviceLists._make(_pick(xs, keep) for xs in self)


def _fits_row_kernel(reduction: Reduction, p: Tensor, g: Tensor, m: Tensor) -> bool:
    blocks = getattr(reduction, "row_blocks", None)
    return (
        blocks is not None
        and p.device.type == "cpu"
        and p.dtype == g.dtype == torch.float32
        and m.dtype in (torch.float32, torch.bfloat16)
        and p.is_contiguous()
        and g.is_contiguous()
        and m.is_contiguous()
    )


def _pick(xs: list[Any], keep: list[int]) -> list[Any]:
    """``xs`` at the positions in ``keep``."""
    return [xs[i] for i in keep]


def _update_exp_avgs(
    exp_avgs: list[Tensor], grads: list[Tensor], weight: float, finite: list[Tensor] | None
) -> None:
    """``m <- lerp(m, g, weight)``, kept where ``finite`` is False. A low-precision ``m`` (bf16 for
    fp32 grads) is updated without a full-size converted copy of ``g`` (compiled: the conversion
    fuses into the update; eager: by chunks of rows)."""
    if finite is not None:  # compiled only: the select fuses into the update
        for m, g, ok in zip(exp_avgs, grads, finite):
            m.copy_(torch.where(ok, torch.lerp(m, g.to(m.dtype), weight), m))
    elif exp_avgs[0].dtype == grads[0].dtype:
        _foreach_lerp_(exp_avgs, grads, weight)
    elif torch.compiler.is_compiling():  # the conversion fuses into the update
        _foreach_lerp_(exp_avgs, [g.to(m.dtype) for g, m in zip(grads, exp_avgs)], weight)
    else:  # eager, m*(1-w) + w*g; a mixed-dtype add_ converts a whole tensor: go by chunks of rows
        _foreach_mul_(exp_avgs, 1 - weight)
        for m, g in zip(exp_avgs, grads):
            for m_rows, g_rows in _row_chunks(m, g):
                m_rows.add_(g_rows, alpha=weight)


def _row_chunks(*tensors: Tensor, numel: int = 1 << 18) -> zip[tuple[Tensor, ...]]:
    """The tensors (same shape) split along dim 0 into chunks of about ``numel`` elements, so that
    an op converting dtypes allocates a small temporary per chunk, never a full-size one."""
    shape = tensors[0].shape
    if len(shape) == 0 or shape.numel() <= numel:
        return zip(*((t,) for t in tensors))
    rows = max(1, numel * shape[0] // shape.numel())
    return zip(*(t.split(rows) for t in tensors))


def _denominators(
    exp_avg_sqs: list[Tensor], steps: list[Tensor], beta1: float, beta2: float, eps: float, lr: float | Tensor
) -> Sequence[Tensor]:
    """``(sqrt(v) / sqrt(1 - beta2**t) + eps) * (1 - beta1**t) / lr`` for each parameter (on the
    small ``v`` tensors; broadcast over the parameter later)."""
    denom = _foreach_sqrt(exp_avg_sqs)
    if steps[0].device.type == "cpu" and not torch.compiler.is_compiling():
        # Eager on CPU: the bias corrections as Python floats (reading a CPU tensor costs no sync),
        # which spares the foreach ops a tiny tensor per parameter and two of their passes.
        host = [_host_bias_corrections(beta1, beta2, t) for t in torch.stack(steps).tolist()]
        _foreach_mul_(denom, [bc1 / bc2_sqrt for bc1, bc2_sqrt in host])
        _foreach_add_(denom, [eps * bc1 for bc1, _ in host])
    else:  # tensors: no host sync, and a compiled step takes them as inputs
        bc1 = _one_minus_power(beta1, steps)
        bc2_sqrt = _one_minus_power(beta2, steps)
        _foreach_sqrt_(bc2_sqrt)
        _foreach_div_(denom, bc2_sqrt)
        _foreach_add_(denom, eps)
        _foreach_mul_(denom, bc1)
    _foreach_div_(denom, lr)
    return denom


def _host_bias_corrections(beta1: float, beta2: float, t: float) -> tuple[float, float]:
    """``(1 - beta1**t, sqrt(1 - beta2**t))`` for a step count ``t``, as :func:`_one_minus_power`
    computes them."""
    bc1 = -math.expm1(t * math.log(beta1)) if beta1 > 0 else 1.0
    bc2_sqrt = math.sqrt(-math.expm1(t * math.log(beta2))) if beta2 > 0 else 1.0
    return bc1, bc2_sqrt


def _one_minus_power(beta: float, steps: list[Tensor]) -> tuple[Tensor, ...]:
    """``1 - beta**t`` for each step tensor ``t``, without cancellation for beta close to 1."""
    log_beta = math.log(beta) if beta > 0 else -math.inf
    out = _foreach_mul(steps, log_beta)
    _foreach_expm1_(out)
    _foreach_neg_(out)
    return out
