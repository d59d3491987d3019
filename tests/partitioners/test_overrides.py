"""Override rules on top of a traced plan, and pinned plans that skip tracing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from partitioners import BlockLayout, PartitionPlan, PlanEntry, PlanMismatchError, auto_partition
from partitioners.overrides import Rule, apply_overrides, load_rules
from tests.models.resnet import resnet18

IMAGES = (torch.Size([1, 3, 32, 32]),)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return resnet18(num_classes=10, width=8)


@pytest.fixture(scope="module")
def plan(model) -> PartitionPlan:
    return auto_partition(model, IMAGES)


def test_module_type_rule_by_class_and_by_name(model, plan):
    for module in (nn.Conv2d, "Conv2d"):
        out = apply_overrides(plan, [{"module": module, "layout": {"kind": "rows", "axis": 0}}], model)
        for name, p in model.named_parameters():
            if p.ndim == 4:
                assert plan[name].layout == BlockLayout.tensor()  # the default the rule overrides
                assert (out[name].role, out[name].layout, out[name].decided_by) == (
                    "conv",
                    BlockLayout.rows(0),
                    "rule",
                )
            else:
                assert out[name] == plan[name]


def test_glob_rules_apply_in_order_later_wins(plan):
    rules = load_rules(
        """
        rules:
          - {match: "layer4.*.conv*.weight", role: other, layout: {kind: tensor}}
          - {match: "layer4.1.conv*", layout: {kind: rows, axis: 1}}
        """
    )
    out = apply_overrides(plan, rules)
    assert (out["layer4.0.conv1.weight"].role, out["layer4.0.conv1.weight"].layout) == (
        "other",
        BlockLayout.tensor(),
    )
    assert (out["layer4.1.conv1.weight"].role, out["layer4.1.conv1.weight"].layout) == (
        "other",
        BlockLayout.rows(1),
    )
    assert out["layer3.0.conv1.weight"] == plan["layer3.0.conv1.weight"]


def test_rules_through_auto_partition(model, plan):
    out = auto_partition(model, IMAGES, overrides=[Rule(match="fc.weight", layout=BlockLayout.tensor())])
    assert (
        out["fc.weight"].decided_by == "rule" and out.replace("fc.weight", **vars(plan["fc.weight"])) == plan
    )


def test_bad_rules_say_what_to_fix(plan):
    with pytest.raises(ValueError, match="match"):
        Rule(role="conv")
    with pytest.raises(ValueError, match="unknown rule fields"):
        load_rules([{"match": "*", "layuot": "tensor"}])
    with pytest.raises(ValueError, match="model="):
        apply_overrides(plan, [{"module": "Conv2d", "layout": "tensor"}])
    with pytest.raises(PlanMismatchError):  # the layout must fit the shape
        apply_overrides(plan, [{"match": "fc.weight", "layout": {"kind": "rows", "axis": 0, "group": 3}}])


def test_pinned_plan_skips_tracing(model, plan, tmp_path, monkeypatch):
    path = tmp_path / "plan.yaml"
    path.write_text(plan.to_yaml())
    import partitioners.read_graph as read_graph

    monkeypatch.setattr(read_graph, "trace", lambda *a, **k: pytest.fail("a pinned plan must not trace"))
    assert auto_partition(model, plan=str(path)) == plan
    assert auto_partition(model, plan=plan) == plan
    pinned = auto_partition(model, plan=path, overrides=[{"match": "fc.bias", "layout": "tensor"}])
    assert pinned["fc.bias"].layout == BlockLayout.tensor()
    with pytest.raises(PlanMismatchError):
        auto_partition(resnet18(num_classes=7, width=8), plan=plan)


def _attention_plan() -> PartitionPlan:
    rows, tensor = BlockLayout.rows(0), BlockLayout.tensor()
    return PartitionPlan(
        {
            "q": PlanEntry((8, 4), "query", BlockLayout.rows(0, group=4), "export"),
            "k": PlanEntry((8, 4), "key", BlockLayout.rows(0, group=4), "export"),
            "v": PlanEntry((8, 4), "value", rows, "export"),
            "o": PlanEntry((4, 8), "attn_out", rows, "export"),
            "up": PlanEntry((16, 4), "linear", rows, "export"),
            "norm": PlanEntry((4,), "norm", tensor, "export"),
        }
    )


def test_role_rules_select_by_the_plans_role():
    plan = _attention_plan()
    out = apply_overrides(plan, [{"has_role": ["query", "key", "value", "attn_out"], "layout": "element"}])
    assert [n for n in out if out[n].decided_by == "rule"] == ["q", "k", "v", "o"]
    assert all(out[n].layout == BlockLayout.element() and out[n].role == plan[n].role for n in "qkvo")
    assert out["up"] == plan["up"] and out["norm"] == plan["norm"]
    assert out.num_blocks == 4 * 32 + 16 + 1  # 128 per-element v, 16 rows, one norm block
    one = apply_overrides(plan, [Rule(has_role="value", layout=BlockLayout.tensor())])
    assert [n for n in one if one[n] != plan[n]] == ["v"] and one["v"].layout == BlockLayout.tensor()


def test_role_rules_see_roles_set_by_earlier_rules_and_combine_with_globs():
    plan = _attention_plan()
    out = apply_overrides(
        plan,
        """
        - {match: "up", role: value}
        - {has_role: value, match: "[uv]*", layout: tensor}
        """,
    )
    assert (out["up"].role, out["up"].layout) == ("value", BlockLayout.tensor())
    assert out["v"].layout == BlockLayout.tensor() and out["o"] == plan["o"]


def test_a_rule_that_selects_nothing_warns_naming_it():
    plan = _attention_plan()
    with pytest.warns(UserWarning, match=r"rule \{has_role: 'querry'\} selects no parameter"):
        out = apply_overrides(plan, [{"has_role": "querry", "layout": "element"}])
    assert out == plan
    with pytest.warns(UserWarning, match=r"rule \{match: '\*\.attn\.\*'\} selects no parameter"):
        apply_overrides(
            plan, [{"match": "*.attn.*", "layout": "element"}, {"match": "q", "layout": "element"}]
        )


@pytest.mark.parametrize("bad", [[], "", [1], ["query", None]])
def test_has_role_takes_role_names(bad):
    with pytest.raises(ValueError, match="'has_role' takes a role name or a list of them"):
        Rule(has_role=bad, layout=BlockLayout.element())
