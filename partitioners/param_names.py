"""Names of parameters registered under several names (tied weights: a head sharing the table).

``module.named_parameters()`` yields a tied tensor once, under the first name met; every place
that maps tensors or aliases to names uses these two functions, so they all agree on that name.
"""

from __future__ import annotations

from torch import nn


def first_names(module: nn.Module) -> dict[int, str]:
    """``id(param) -> name`` as ``module.named_parameters()`` gives it (a tied tensor once)."""
    return {id(p): name for name, p in module.named_parameters()}


def canonical_names(module: nn.Module) -> dict[str, str]:
    """Every name of every parameter, aliases included, mapped to its :func:`first_names` name."""
    first = first_names(module)
    return {name: first[id(p)] for name, p in module.named_parameters(remove_duplicate=False)}
