"""What someone tuning Adam-mini wants to watch: per role, the effective step size and the share
of the parameters.

The effective step size of a block is ``lr / (sqrt(v_hat) + eps)`` with ``v_hat = v / (1 - beta2^t)``:
the factor the bias-corrected first moment is multiplied by. One value per block (Adam-mini's
point: few of them), summarised per role by min / median / max.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import Tensor
from torch.optim import Optimizer

from partitioners import PartitionPlan

from .functional import _one_minus_power
from .optimizer import AdamMini
from .sharded import local_tensor

MiB = 2**20


def optimizer_state_bytes(optimizers: Iterable[Optimizer]) -> int:
    """Bytes of the tensors the optimizers keep in ``state`` (moments and step counters)."""
    return sum(
        t.numel() * t.element_size()
        for opt in optimizers
        for state in opt.state.values()
        for t in state.values()
        if isinstance(t, Tensor)
    )


def role_counts(plan: PartitionPlan) -> dict[str, tuple[int, int]]:
    """``role -> (parameter elements, blocks)``, roles in plan order."""
    counts: dict[str, tuple[int, int]] = {}
    for entry in plan.values():
        numel, blocks = counts.get(entry.role, (0, 0))
        counts[entry.role] = (numel + torch.Size(entry.shape).numel(), blocks + entry.num_blocks)
    return counts


def role_fractions(plan: PartitionPlan) -> dict[str, float]:
    """Fraction of all planned parameter elements held by each role."""
    total = plan.num_params or 1
    return {role: numel / total for role, (numel, _) in role_counts(plan).items()}


@torch.no_grad()
def step_size_stats(optimizer: AdamMini, prefix: str = "adam_mini") -> dict[str, float]:
    """``{prefix}/step_size/{role}/{min,median,max}`` over every block with state, and
    ``{prefix}/params/{role}`` (fraction of parameters). Empty before the first step.

    Under FSDP2, blocks of element-wise layouts are this rank's shard only (the others are full).
    """
    if optimizer.plan is None:
        return {}
    per_role: dict[str, list[Tensor]] = defaultdict(list)
    for group in optimizer.param_groups:
        lr, (_, beta2), eps = group["lr"], group["betas"], group["eps"]
        for name, p in zip(group["param_names"], group["params"]):
            state = optimizer.state.get(p)
            if not state:
                continue
            v = local_tensor(state["exp_avg_sq"]).detach().float().flatten()
            # 1 - beta2**t on v's device (no host sync), as the step computes it
            (bias_correction2,) = _one_minus_power(beta2, [state["step"].to(v.device, torch.float32)])
            per_role[optimizer.plan[name].role].append(
                (v / bias_correction2).sqrt_().add_(eps).reciprocal_().mul_(lr)
            )
    roles, rows = [], []
    for role in sorted(per_role):
        values = torch.cat(per_role[role])
        if values.numel():
            roles.append(role)
            rows.append(torch.stack([values.min(), values.median(), values.max()]))
    out: dict[str, float] = {}
    if rows:
        table = torch.stack([r.to(rows[0].device) for r in rows]).tolist()  # one host sync in all
        for role, (low, median, high) in zip(roles, table):
            out[f"{prefix}/step_size/{role}/min"] = low
            out[f"{prefix}/step_size/{role}/median"] = median
            out[f"{prefix}/step_size/{role}/max"] = high
    for role, frac in sorted(role_fractions(optimizer.plan).items()):
        out[f"{prefix}/params/{role}"] = frac
    return out
