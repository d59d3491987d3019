"""The plan contract: every layout of the DESIGN table, table printing, exact YAML round trip, checks."""

import pytest
import torch
from torch import nn

from partitioners import BlockLayout, PartitionPlan, PlanEntry, PlanMismatchError, Segment

# One entry per row of the DESIGN partition table (plus the odd orders the table asks for).
CASES = {
    "embed.weight": PlanEntry((100, 16), "embedding", BlockLayout.rows(0), "export"),
    "conv1d.weight": PlanEntry((16, 48), "linear", BlockLayout.rows(1), "export"),  # x @ W
    "q.weight": PlanEntry((16, 16), "query", BlockLayout.rows(0, group=4), "export"),
    "qkv.weight": PlanEntry(
        (32, 16), "qkv", BlockLayout.segmented([(16, 4, "q"), (8, 4, "k"), (8, 1, "v")]), "export"
    ),
    "vkq.weight": PlanEntry(
        (32, 16), "qkv", BlockLayout.segmented([(8, 1, "v"), (16, 4, "q"), (8, 4, "k")]), "export"
    ),
    "interleaved.weight": PlanEntry(
        (48, 16), "qkv", BlockLayout.segmented([(4, 4, "q"), (4, 4, "k"), (4, 1, "v")], repeat=4), "fx"
    ),
    "experts.weight": PlanEntry((4, 24, 16), "expert", BlockLayout.rows(1, batch_axes=(0,)), "export"),
    "experts_t.weight": PlanEntry((4, 16, 24), "expert", BlockLayout.rows(2, batch_axes=(0,)), "export"),
    "conv.weight": PlanEntry((8, 3, 3, 3), "conv", BlockLayout.rows(0), "structure"),
    "norm.weight": PlanEntry((16,), "norm", BlockLayout.tensor(), "export"),
    "lin.bias": PlanEntry((16,), "bias", BlockLayout.element(), "names"),
    "odd.weight": PlanEntry((5, 7), "other", BlockLayout.tensor(), "rule"),
}
BLOCKS = {
    "embed.weight": 100,
    "conv1d.weight": 48,
    "q.weight": 4,
    "qkv.weight": 4 + 2 + 8,
    "vkq.weight": 8 + 4 + 2,
    "interleaved.weight": 4 * (1 + 1 + 4),
    "experts.weight": 4 * 24,
    "experts_t.weight": 4 * 24,
    "conv.weight": 8,
    "norm.weight": 1,
    "lin.bias": 16,
    "odd.weight": 1,
}


def test_every_design_case_has_the_right_block_count():
    plan = PartitionPlan(CASES)
    assert {n: e.num_blocks for n, e in plan.items()} == BLOCKS
    assert plan.num_blocks == sum(BLOCKS.values())


def test_yaml_round_trip_is_exact():
    plan = PartitionPlan(CASES)
    text = plan.to_yaml()
    again = PartitionPlan.from_yaml(text)
    assert again == plan and list(again) == list(plan)
    assert again.to_yaml() == text


def test_table_lists_every_param_and_totals():
    text = str(PartitionPlan(CASES))
    lines = text.splitlines()
    assert lines[0].split() == ["param", "shape", "role", "layout", "#blocks", "decided-by"]
    assert "segments(dim=0, (q:16/4 + k:8/4 + v:8/1))" in text
    assert "segments(dim=0, (q:4/4 + k:4/4 + v:4/1) x4)" in text
    assert "heads(dim=0, size=4)" in text and "rows(dim=1)" in text and "rows(dims=0,1)" in text
    assert len(lines) == 2 + len(CASES) + 1
    assert lines[-1].startswith(f"{len(CASES)} tensors") and "v values" in lines[-1]


@pytest.mark.parametrize(
    "shape, layout, match",
    [
        ((32, 16), BlockLayout.segmented([(16, 4), (8, 4)]), "segments cover 24 rows"),
        ((30, 16), BlockLayout.rows(0, group=4), "groups of 4"),
        ((16,), BlockLayout.rows(1), "out of range"),
        ((4, 16), BlockLayout.rows(0, batch_axes=(2,)), "out of range"),
    ],
)
def test_layout_that_does_not_fit_names_the_param(shape, layout, match):
    with pytest.raises(PlanMismatchError, match=f"'bad.weight'.*{match}"):
        PartitionPlan({"bad.weight": PlanEntry(shape, "linear", layout)})


def test_invalid_layouts_are_rejected():
    with pytest.raises(ValueError):
        Segment(6, 4)
    with pytest.raises(ValueError):
        BlockLayout("tensor", axis=1)
    with pytest.raises(ValueError):
        BlockLayout.rows(0, batch_axes=(0,))
    with pytest.raises(ValueError, match="unknown layout fields"):
        BlockLayout.from_dict({"kind": "rows", "axes": 1})


def test_check_params_against_a_model():
    model = nn.Linear(4, 3)
    plan = PartitionPlan(
        {
            "weight": PlanEntry((3, 4), "linear", BlockLayout.rows(0)),
            "bias": PlanEntry((3,), "bias", BlockLayout.element()),
        }
    )
    plan.check_params(model.named_parameters())
    with pytest.raises(PlanMismatchError, match="'weight' has shape"):
        plan.check_params(nn.Linear(5, 3).named_parameters())
    with pytest.raises(PlanMismatchError, match="'extra'"):
        plan.check_params([*model.named_parameters(), ("extra", torch.zeros(1))])
    with pytest.raises(PlanMismatchError, match="doesn't have"):
        plan.check_params([("weight", model.weight)])
    plan.check_params([("weight", model.weight)], allow_extra=True)
