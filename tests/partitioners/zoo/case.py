"""One zoo entry: a real architecture from a tiny config, and its layout read from the source.

To add an architecture, append one ``Case`` to the ``CASES`` list of the module for its library
(``hf_decoders.py``, ``hf_others.py``, ``hf_more*.py``, ``litgpt_models.py``, ``torch_nn.py``): a
builder that returns the model (random weights, no downloads) and its example inputs, and the expected blocks
of every trainable parameter, as ``{fnmatch pattern: blocks}`` (first matching pattern wins; every
pattern must match something). Write the expectation from the library's modeling code, never from
``auto_partition``'s output. If today's reader misses it, set ``miss`` to the class of the miss:
the case then runs as a strict xfail, which fails (reminding to drop ``miss``) once it is fixed.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn

from .blocks import Blocks


class ExpectationError(Exception):
    """A case's expectation doesn't fit its model (never hidden by the case's xfail mark)."""


class Built(NamedTuple):
    model: nn.Module
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = {}  # noqa: RUF012 (a NamedTuple default, never mutated)


@dataclass(frozen=True)
class Case:
    name: str
    library: str  # the distribution whose code defines the model: "transformers", "litgpt", "torch"
    build: Callable[[], Built]
    expect: dict[str, Blocks]
    miss: str | None = None  # why today's reader gets the layout wrong (strict xfail)
    escapes: str | None = None  # why an exception escapes auto_partition today (strict xfail)
    # parameters outside the partition principle's table (e.g. an SSM's A_log): a warning may
    # name them; it must name no other parameter
    may_warn: tuple[str, ...] = ()
    slow: bool = False

    def expected(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Each trainable parameter's expected block ids (a parameter tied to another is listed once)."""
        used: set[str] = set()
        out: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            pattern = next((pat for pat in self.expect if fnmatch.fnmatchcase(name, pat)), None)
            if pattern is None:
                raise ExpectationError(f"{self.name}: no expectation written for parameter {name!r}")
            used.add(pattern)
            try:
                out[name] = self.expect[pattern](tuple(p.shape))
            except ValueError as err:
                raise ExpectationError(f"{self.name}: {name} {tuple(p.shape)} ({pattern}): {err}") from None
        unused = [pat for pat in self.expect if pat not in used]
        if unused:
            raise ExpectationError(f"{self.name}: patterns that match no parameter: {unused}")
        return out


def token_ids(vocab: int, batch: int = 2, seq: int = 8) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(0))


def seeded(make: Callable[[], nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    return make()
