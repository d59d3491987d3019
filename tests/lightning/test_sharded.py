"""The FSDP2 block math alone (no Lightning): Shard(0) DTensors on 2 gloo ranks against full
tensors, for every layout kind, including uneven and empty shards and blocks cut by a shard
boundary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini.sharded import build_reduction, local_tensor
from partitioners import BlockLayout, PartitionPlan, PlanEntry
from tests.lightning.distributed import run_ranks

pytestmark = pytest.mark.distributed


def test_every_layout_on_uneven_shards_matches_the_full_tensor(tmp_path):
    out = tmp_path / "result.json"
    run_ranks([str(out)], script=Path(__file__).with_name("sharded_script.py"))
    result = json.loads(out.read_text())
    assert result["checks"] == {"m_is_sharded": True, "v_is_full": True, "bias_v_is_sharded": True}
    worst = max(result["diffs"].values())
    assert worst <= 1e-6, result["diffs"]


def test_plain_tensors_need_no_process_group():
    assert not torch.distributed.is_initialized()
    p = torch.nn.Parameter(torch.randn(6, 4))
    assert local_tensor(p) is p
    red = build_reduction(BlockLayout.rows(0, group=3), p)
    assert red.v_shape == (2, 1)
    plan = PartitionPlan([("w", PlanEntry((6, 4), "query", BlockLayout.rows(0, group=3)))])
    opt = AdamMini([("w", p)], partition=plan)
    p.grad = torch.randn(6, 4)
    opt.step()
    assert not torch.distributed.is_initialized()
