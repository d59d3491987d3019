"""Two ranks: AdamMini over Shard(0) DTensors (uneven, empty shards, straddling blocks of every
layout kind) against the same steps on full tensors; rank 0 writes the largest difference."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard, distribute_tensor

from lightning_adam_mini import AdamMini
from partitioners import BlockLayout, PartitionPlan, PlanEntry, Segment

# (shape, layout): over 2 ranks, dim 0 splits as torch.chunk does (ceil(n/2) | rest)
CASES = {
    "rows_uneven": ((7, 6), BlockLayout.rows(0)),  # 4 | 3 rows
    "heads_straddle": ((24, 5), BlockLayout.rows(0, group=8)),  # head 1 = rows 8..15, cut at 12
    "rows_dim1": ((5, 9), BlockLayout.rows(1)),  # Conv1D: output neurons are columns
    "norm": ((9,), BlockLayout.tensor()),
    "whole_3d": ((3, 4, 2), BlockLayout.tensor()),
    "bias": ((7,), BlockLayout.element()),
    "one_row": ((1, 4), BlockLayout.rows(0)),  # rank 1's shard is empty
    "experts": ((3, 4, 6), BlockLayout.rows(1, batch_axes=(0,))),  # per (expert, neuron)
    "segments": (
        (30, 4),
        BlockLayout.segmented([Segment(12, 4, "q"), Segment(6, 6, "k"), Segment(12, 1, "v")]),
    ),
    "interleaved": ((12, 4), BlockLayout.segmented([(2, 2), (4, 1)], repeat=2)),
}
STEPS = 3


def main() -> None:
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    torch.manual_seed(0)
    init = {n: torch.randn(shape) for n, (shape, _) in CASES.items()}
    grads = [
        {n: torch.randn(shape) * (10.0 ** (i - 1)) for n, (shape, _) in CASES.items()} for i in range(STEPS)
    ]
    plan = PartitionPlan((n, PlanEntry(shape, "other", layout)) for n, (shape, layout) in CASES.items())

    full = {n: torch.nn.Parameter(t.clone()) for n, t in init.items()}
    sharded = {n: torch.nn.Parameter(distribute_tensor(t.clone(), mesh, [Shard(0)])) for n, t in init.items()}
    kwargs = dict(lr=1e-2, weight_decay=0.1, partition=plan)
    opt_full = AdamMini(list(full.items()), **kwargs)
    opt_sharded = AdamMini(list(sharded.items()), **kwargs)
    for step_grads in grads:
        for n, g in step_grads.items():
            full[n].grad = g.clone()
            sharded[n].grad = distribute_tensor(g.clone(), mesh, [Shard(0)])
        opt_full.step()
        opt_sharded.step()

    diffs = {n: (sharded[n].full_tensor() - full[n]).abs().max().item() for n in CASES}
    state = opt_sharded.state[sharded["rows_uneven"]]
    checks = {
        "m_is_sharded": isinstance(state["exp_avg"], DTensor) and state["exp_avg"].placements == (Shard(0),),
        "v_is_full": tuple(state["exp_avg_sq"].shape) == (7, 1)
        and not isinstance(state["exp_avg_sq"], DTensor),
        "bias_v_is_sharded": isinstance(opt_sharded.state[sharded["bias"]]["exp_avg_sq"], DTensor),
    }
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as f:
            json.dump({"diffs": diffs, "checks": checks}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
