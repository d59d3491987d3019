"""auto_partition on the zoo: every trainable parameter's blocks against the hand-written layout."""

from __future__ import annotations

import fnmatch
import functools
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from partitioners import PartitionPlan, PartitionWarning, auto_partition

from .blocks import describe, same_partition
from .case import Case
from .plan_view import plan_blocks
from .registry import CASES

BY_NAME = {case.name: case for case in CASES}


@dataclass
class Outcome:
    plan: PartitionPlan | None
    error: BaseException | None
    partition_warnings: list[str]
    expected: dict[str, torch.Tensor]


@functools.cache
def outcome(name: str) -> Outcome:
    """Build the case and partition it once; both tests read the result."""
    case = BY_NAME[name]
    model, args, kwargs = case.build()
    expected = case.expected(model)
    plan, error = None, None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            plan = auto_partition(model, args, kwargs)
        except Exception as err:  # the property under test: nothing may escape
            error = err
    found = [str(w.message) for w in caught if issubclass(w.category, PartitionWarning)]
    return Outcome(plan, error, found, expected)


def params(xfail_when: Callable[[Case], str | None]) -> list[Any]:
    """One pytest param per case; a strict xfail where ``xfail_when`` gives the miss class."""
    out = []
    for case in CASES:
        marks = [pytest.mark.slow] if case.slow else []
        reason = xfail_when(case)
        if reason:
            # only the checks' AssertionError is expected: a broken build or expectation still fails
            marks.append(pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason))
        out.append(pytest.param(case.name, id=case.name, marks=marks))
    return out


@pytest.mark.parametrize("name", params(lambda case: case.escapes))
def test_no_exception_escapes(name: str) -> None:
    error = outcome(name).error
    assert error is None, f"auto_partition raised {type(error).__name__}: {error}"


def _mismatches(result: Outcome) -> list[str]:
    """One line per parameter whose plan partitions its elements otherwise than expected."""
    assert result.plan is not None
    lines = []
    assert list(result.plan) == list(result.expected), "the plan lists other parameters than the model"
    for name, want in result.expected.items():
        entry = result.plan[name]
        got = plan_blocks(entry)
        if not same_partition(got, want):
            lines.append(
                f"  {name} {tuple(entry.shape)}: expected {describe(want)}; "
                f"plan has {entry.layout} [{entry.role}, {entry.decided_by}] = {describe(got)}"
            )
    return lines


@pytest.mark.parametrize("name", params(lambda case: case.escapes or case.miss))
def test_layout_matches_the_library_source(name: str) -> None:
    case, result = BY_NAME[name], outcome(name)
    assert result.error is None, f"auto_partition raised {type(result.error).__name__}: {result.error}"
    wrong = _mismatches(result)
    assert not wrong, f"{case.name}: {len(wrong)} parameters partitioned differently:\n" + "\n".join(wrong)
    _check_warnings(case, result)


def _check_warnings(case: Case, result: Outcome) -> None:
    """No warning names a parameter the principle explains (only ``case.may_warn`` ones may be named)."""
    text = "\n".join(result.partition_warnings)
    named = {n for n in result.expected if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", text)}
    allowed = {n for n in result.expected if any(fnmatch.fnmatchcase(n, pat) for pat in case.may_warn)}
    assert named <= allowed, f"warned about explained parameters {sorted(named - allowed)}:\n{text}"
    assert named or not text, f"a warning names no parameter:\n{text}"
