"""Reading a plan from YAML or plain data: every refusal's whole message, written by hand.

A pinned plan is edited by people, so each malformed entry must name the file, the parameter and
the field, and nothing a person could mistype may be read silently (a float size, a bool axis, a
key given twice).
"""

from __future__ import annotations

import pytest

from partitioners import BlockLayout, PartitionPlan, PlanEntry, PlanMismatchError, load_plan

GOOD = "  w: {shape: [4, 2], role: linear, layout: {kind: rows, axis: 0}}\n"


def refusal(text: str, source: str = "p.yaml") -> str:
    with pytest.raises(ValueError) as info:
        PartitionPlan.from_yaml(text, source=source)
    return str(info.value)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("3", "an entry is a mapping with shape, role and layout, got 3"),
        ("[4, 2]", "an entry is a mapping with shape, role and layout, got [4, 2]"),
        ("{shape: [4, 2], role: linear}", "entry lacks ['layout']"),
        ("{layout: {kind: tensor}}", "entry lacks ['shape', 'role']"),
        (
            "{shape: [4, 2], role: linear, layout: rows}",
            "layout must be a mapping like {kind: rows, axis: 0}, got 'rows'",
        ),
        ("{shape: [4, 2.0], role: linear, layout: {kind: tensor}}", "shape must hold integers, got [4, 2.0]"),
        (
            "{shape: [4, true], role: linear, layout: {kind: tensor}}",
            "shape must hold integers, got [4, True]",
        ),
        ("{shape: 4.5, role: linear, layout: {kind: tensor}}", "shape must hold integers, got 4.5"),
        (
            "{shape: [4, 2], role: linear, layout: {kind: rows, axis: 0.0}}",
            "layout axis must hold integers, got 0.0",
        ),
        (
            "{shape: [4, 2], role: linear, layout: {kind: rows, axis: false}}",
            "layout axis must hold integers, got False",
        ),
        (
            "{shape: [8, 2], role: q, layout: {kind: heads, axis: 0, segments: [[2, 2.5]]}}",
            "layout segments must hold integers, got [[2, 2.5]]",
        ),
    ],
)
def test_a_malformed_entry_names_the_file_the_parameter_and_the_field(entry, message):
    assert refusal(f"params:\n  w: {entry}\n") == f"p.yaml: parameter 'w': {message}"


def test_an_entry_that_plain_data_cannot_build_names_the_parameter():
    # PlanEntry.from_dict's own error, prefixed: an unknown layout kind.
    text = refusal("params:\n  w: {shape: [4, 2], role: linear, layout: {kind: diagonal}}\n")
    assert text.startswith("p.yaml: parameter 'w': ") and "diagonal" in text


def test_a_layout_that_does_not_fit_its_shape_names_the_file():
    with pytest.raises(PlanMismatchError) as info:
        PartitionPlan.from_yaml(
            "params:\n  w: {shape: [4], role: x, layout: {kind: rows, axis: 1}}\n", "p.yaml"
        )
    assert str(info.value).startswith("p.yaml: plan entry 'w': ")


def test_the_default_sources_are_named_in_errors():
    with pytest.raises(ValueError, match=r"^plan YAML: not valid YAML: "):
        PartitionPlan.from_yaml("params: [\n")
    with pytest.raises(ValueError, match=r"^plan YAML: parameter 'w': entry lacks \['layout'\]$"):
        PartitionPlan.from_yaml("params:\n  w: {shape: [1], role: bias}\n")
    with pytest.raises(ValueError, match=r"^plan: 'params' must map parameter names to entries, got \[1\]$"):
        PartitionPlan.from_dict([1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^plan: parameter 'w': entry lacks \['role'\]$"):
        PartitionPlan.from_dict({"w": {"shape": [1], "layout": {"kind": "element"}}})
    with pytest.raises(PlanMismatchError, match=r"^plan: plan entry 'w': "):
        PartitionPlan.from_dict({"w": {"shape": [4], "role": "x", "layout": {"kind": "rows", "axis": 2}}})


def test_invalid_yaml_is_a_value_error_naming_the_file():
    text = refusal("params:\n  w: {shape: [4, 2]\n")
    assert text.startswith("p.yaml: not valid YAML: ") and "line 3" in text


@pytest.mark.parametrize(
    ("text", "key", "line", "column"),
    [
        (f"params:\n{GOOD}{GOOD}", "w", 3, 3),  # a parameter given twice: PyYAML would keep the last
        ("params:\n  w: {shape: [4, 2], role: linear, role: bias, layout: {kind: tensor}}\n", "role", 2, 36),
        (f"params:\n{GOOD}params: {{}}\n", "params", 3, 1),
    ],
)
def test_a_key_given_twice_is_refused_with_its_place(text, key, line, column):
    first_lines = refusal(text).splitlines()[:2]
    assert first_lines == [
        f"p.yaml: not valid YAML: duplicate key '{key}'",
        f'  in "<unicode string>", line {line}, column {column}:',
    ]


def test_equal_keys_in_different_mappings_are_not_duplicates():
    plan = PartitionPlan.from_yaml(
        "params:\n"
        "  a: {shape: [4, 2], role: linear, layout: {kind: rows, axis: 0}}\n"
        "  b: {shape: [4, 2], role: linear, layout: {kind: rows, axis: 1}}\n"
    )
    assert plan["a"].layout == BlockLayout.rows(0) and plan["b"].layout == BlockLayout.rows(1)


def test_distinct_plans_hash_apart():
    one = PartitionPlan({"w": PlanEntry((4,), "bias", BlockLayout.element())})
    other = PartitionPlan({"w": PlanEntry((4,), "bias", BlockLayout.tensor())})
    assert hash(one) != hash(other)  # equal hashes would make every plan collide in a dict


def test_load_plan_reads_the_file_it_is_given(tmp_path):
    path = tmp_path / "pinned.yaml"
    path.write_text("params:\n  w: {shape: [4, 2], role: linear, layout: {kind: tensor}}\n")
    plan = load_plan(path)
    assert dict(plan) == {"w": PlanEntry((4, 2), "linear", BlockLayout.tensor())}
    assert load_plan(str(path)) == plan
    assert load_plan(plan) is plan


def test_load_plan_expands_the_home_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "pinned.yaml").write_text("params:\n  w: {shape: [3], role: bias, layout: {kind: element}}\n")
    assert list(load_plan("~/pinned.yaml")) == ["w"]


def test_load_plan_names_the_missing_file_and_the_malformed_one(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(FileNotFoundError) as info:
        load_plan(missing)
    assert str(info.value) == f"partition plan file {str(missing)!r} does not exist"
    with pytest.raises(FileNotFoundError):
        load_plan(tmp_path)  # a directory is not a plan file
    bad = tmp_path / "bad.yaml"
    bad.write_text("params:\n  w: {shape: [2]}\n")
    with pytest.raises(ValueError) as info:
        load_plan(bad)
    assert str(info.value) == f"{bad}: parameter 'w': entry lacks ['role', 'layout']"
