"""Names for parameters given without them (``AdamMini(model.parameters())``).

Frameworks that build optimizers generically (LightningCLI, ``OptimizerCallable``, Hydra's
``_partial_``) pass bare tensors. The optimizer then waits until it knows the module: the names
come from matching each tensor, by identity, with ``module.named_parameters()``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn


def name_param_groups(param_groups: list[dict[str, Any]], module: nn.Module) -> list[tuple[str, Tensor]]:
    """Set ``group["param_names"]`` for every group from ``module``; return all (name, param) pairs.

    Raises ``ValueError`` naming the first tensor that is not one of ``module``'s parameters.
    """
    names: dict[int, str] = {}
    for name, p in module.named_parameters():
        names.setdefault(id(p), name)
    resolved = []
    for group in param_groups:
        group_names = []
        for i, p in enumerate(group["params"]):
            name = names.get(id(p))
            if name is None:
                raise ValueError(
                    f"AdamMini.bind: tensor #{i} {tuple(p.shape)} of a param group is not a parameter "
                    f"of {type(module).__name__}. Bind to the module whose parameters built the "
                    "optimizer; if the module's parameters were replaced after the optimizer was made "
                    "(e.g. fully_shard in configure_model), build it in configure_optimizers instead, "
                    "e.g. `return adam_mini_optimizers(self)`"
                )
            group_names.append(name)
        group["param_names"] = group_names
        resolved.extend(zip(group_names, group["params"]))
    return resolved
