"""PartitionPlan and PlanEntry, each result written out by hand: the YAML text, the table, the
totals, value semantics, replace, and every check_params message."""

from __future__ import annotations

import pytest
import torch

from partitioners import BlockLayout, PartitionPlan, PlanEntry, PlanMismatchError

# Entries are built inside the tests: mutmut attributes a call to the test that makes it.


def emb() -> PlanEntry:
    return PlanEntry((1000, 8), "embedding", BlockLayout.rows(0), "export")


def bias() -> PlanEntry:
    return PlanEntry((8,), "bias", BlockLayout.element())  # decided_by defaults to "manual"


def two_entry_plan() -> PartitionPlan:
    return PartitionPlan({"emb.weight": emb(), "ln.bias": bias()})


def test_entry_shape_is_a_tuple_of_python_ints():
    entry = PlanEntry(torch.Size([3, 4]), "linear", BlockLayout.rows(0))
    assert entry.shape == (3, 4) and type(entry.shape) is tuple
    odd = PlanEntry([torch.tensor(3), 4.0], "x", BlockLayout.tensor())  # type: ignore[arg-type]
    assert odd.shape == (3, 4) and all(type(s) is int for s in odd.shape)
    assert bias().decided_by == "manual" and bias().shape == (8,)


def test_entry_plain_data():
    assert emb().to_dict() == {
        "shape": [1000, 8],
        "role": "embedding",
        "layout": {"kind": "rows", "axis": 0},
        "decided_by": "export",
    }
    assert PlanEntry.from_dict({"shape": [8], "role": "bias", "layout": {"kind": "element"}}) == bias()
    assert PlanEntry.from_dict(emb().to_dict()) == emb()


def test_yaml_text():
    assert two_entry_plan().to_yaml() == (
        "params:\n"
        "  emb.weight:\n"
        "    shape: [1000, 8]\n"
        "    role: embedding\n"
        "    layout: {kind: rows, axis: 0}\n"
        "    decided_by: export\n"
        "  ln.bias:\n"
        "    shape: [8]\n"
        "    role: bias\n"
        "    layout: {kind: element}\n"
        "    decided_by: manual\n"
    )


def test_from_yaml_reads_hand_written_text_in_its_order():
    plan = PartitionPlan.from_yaml(
        "params:\n"
        "  ln.bias: {shape: [8], role: bias, layout: {kind: element}}\n"
        "  emb.weight: {shape: [1000, 8], role: embedding, layout: {kind: rows}, decided_by: export}\n"
    )
    assert list(plan) == ["ln.bias", "emb.weight"]
    assert plan["ln.bias"] == bias() and plan["emb.weight"] == emb()


@pytest.mark.parametrize("text", ["", "- a\n- b\n", "plan: {}\n", "42\n"])
def test_from_yaml_without_a_params_mapping_says_what_is_expected(text):
    with pytest.raises(ValueError) as info:
        PartitionPlan.from_yaml(text, source="pinned.yaml")
    assert str(info.value).startswith(
        "pinned.yaml: a partition plan YAML has a top-level 'params' mapping (parameter name -> "
        "shape, role, layout), got "
    )
    assert str(info.value).endswith("; write one with plan.to_yaml()")


def test_table_text():
    assert str(two_entry_plan()) == (
        "param       shape   role       layout       #blocks  decided-by\n"
        "----------  ------  ---------  -----------  -------  ----------\n"
        "emb.weight  1000x8  embedding  rows(dim=0)  1,000    export\n"
        "ln.bias     8       bias       element      8        manual\n"
        "2 tensors, 8,008 params, 1,008 v values (12.5874% of AdamW's v)"
    )
    assert (
        repr(two_entry_plan())
        == "PartitionPlan(<2 tensors, 8,008 params, 1,008 v values (12.5874% of AdamW's v)>)"
    )


def test_rows_of_a_scalar_parameter_and_an_empty_plan():
    plan = PartitionPlan({"scale": PlanEntry((), "other", BlockLayout.tensor())})
    assert plan.rows() == [("scale", "()", "other", "tensor", "1", "manual")]
    assert PartitionPlan({}).summary() == "0 tensors, 0 params, 0 v values (0.0000% of AdamW's v)"


def test_totals():
    plan = two_entry_plan()
    assert (len(plan), plan.num_params, plan.num_blocks) == (2, 8008, 1008)
    assert (emb().num_blocks, bias().num_blocks) == (1000, 8)


def test_duplicate_names_are_rejected():
    with pytest.raises(ValueError, match="^parameter 'w' appears twice in the plan$"):
        PartitionPlan([("w", bias()), ("w", bias())])


def test_plans_are_ordered_hashable_values():
    a, b = two_entry_plan(), two_entry_plan()
    assert a == b and hash(a) == hash(b) and {a: 1}[b] == 1
    swapped = PartitionPlan({"ln.bias": bias(), "emb.weight": emb()})
    assert swapped != a  # the order is part of the plan (it is the table's and the YAML's order)
    assert a != two_entry_plan().replace("ln.bias", role="other")
    assert a.__eq__({"emb.weight": emb(), "ln.bias": bias()}) is NotImplemented
    assert a["emb.weight"] == emb() and list(a) == ["emb.weight", "ln.bias"]


def test_replace_changes_one_entry_and_checks_it():
    plan = two_entry_plan()
    new = plan.replace("emb.weight", layout=BlockLayout.tensor(), decided_by="rule")
    assert new["emb.weight"] == PlanEntry((1000, 8), "embedding", BlockLayout.tensor(), "rule")
    assert new["ln.bias"] == bias() and list(new) == list(plan)
    assert plan["emb.weight"] == emb()  # the original is unchanged
    with pytest.raises(KeyError, match="no parameter 'emb.bias' in the plan"):
        plan.replace("emb.bias", role="bias")
    with pytest.raises(
        PlanMismatchError,
        match="^plan entry 'emb.weight': 1000 rows along axis 0 don't split into groups of 3$",
    ):
        plan.replace("emb.weight", layout=BlockLayout.rows(0, group=3))


def test_check_params_messages():
    plan = two_entry_plan()
    emb, bias = torch.empty(1000, 8), torch.empty(8)
    plan.check_params([("emb.weight", emb), ("ln.bias", bias)])
    plan.check_params([("ln.bias", bias), ("emb.weight", emb)])  # order doesn't matter here
    with pytest.raises(
        PlanMismatchError,
        match=r"^parameter 'x' \(2,\) is not in the partition plan; re-run auto_partition on this model or add an entry for it$",
    ):
        plan.check_params([("emb.weight", emb), ("ln.bias", bias), ("x", torch.empty(2))])
    with pytest.raises(
        PlanMismatchError,
        match=r"^parameter 'ln.bias' has shape \(9,\) but the plan was made for \(8,\); the plan belongs to another model$",
    ):
        plan.check_params([("emb.weight", emb), ("ln.bias", torch.empty(9))])
    with pytest.raises(
        PlanMismatchError,
        match=r"^the plan names parameters the model doesn't have: \['ln.bias'\]; the plan belongs to another model \(or those params are frozen\)$",
    ):
        plan.check_params([("emb.weight", emb)])
    plan.check_params([("emb.weight", emb)], allow_extra=True)


@pytest.mark.parametrize("extra, suffix", [(5, "; the plan"), (6, " ...; the plan")])
def test_check_params_lists_at_most_five_missing_names(extra, suffix):
    plan = PartitionPlan({f"p{i}": PlanEntry((1,), "bias", BlockLayout.element()) for i in range(extra)})
    with pytest.raises(PlanMismatchError) as err:
        plan.check_params([])
    assert "['p0', 'p1', 'p2', 'p3', 'p4']" + suffix in str(err.value)
