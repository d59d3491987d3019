"""Fallback when the forward can't be traced: roles from module types and parameter shapes.

Only what a module's type says for certain is used: an ``nn.Embedding`` weight is a table, an
``nn.Linear`` weight a projection with outputs on dim 0 (a ``Conv1D``-style module with ``nf``
outputs stores them on dim 1), ``nn.MultiheadAttention``'s packed ``in_proj_weight`` is q|k|v with
``num_heads`` heads, norm modules have a scale and a shift, convolutions have output channels.
A linear tied to an embedding is that embedding. Anything else is left to the name rules.
"""

from __future__ import annotations

from torch import nn

from .layout import BlockLayout
from .param_names import first_names
from .plan import CONV_LAYOUT, Decision

_NORMS = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
    nn.modules.batchnorm._NormBase,
)


def _module_decisions(module: nn.Module) -> dict[str, Decision]:
    """Decisions for ``module``'s own parameters (not its children's), by local name."""
    bias = Decision("bias", BlockLayout.element())
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        return {"weight": Decision("embedding", BlockLayout.rows(0))}
    if isinstance(module, nn.Linear):
        return {"weight": Decision("linear", BlockLayout.rows(0)), "bias": bias}
    if isinstance(module, nn.modules.conv._ConvNd):
        return {"weight": Decision("conv", CONV_LAYOUT), "bias": bias}
    if isinstance(module, _NORMS):
        return {"weight": Decision("norm", BlockLayout.tensor()), "bias": bias}
    if isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim:
        e, head = module.embed_dim, module.head_dim
        qkv = BlockLayout.segmented([(e, head, "q"), (e, head, "k"), (e, 1, "v")])
        return {"in_proj_weight": Decision("qkv", qkv), "in_proj_bias": bias}
    weight = module._parameters.get("weight")
    nf = getattr(module, "nf", None)
    if weight is not None and weight.ndim == 2 and nf == weight.shape[1]:  # x @ W storage (Conv1D)
        return {"weight": Decision("linear", BlockLayout.rows(1)), "bias": bias}
    return {}


def structure_decisions(model: nn.Module) -> dict[str, Decision]:
    """Decisions for the parameters whose module type explains them, by first (tied) name."""
    first_name = first_names(model)
    out: dict[str, Decision] = {}
    for _prefix, module in model.named_modules(remove_duplicate=False):
        for local, decision in _module_decisions(module).items():
            p = module._parameters.get(local)
            if p is None:
                continue
            name = first_name[id(p)]
            if out.get(name, decision).role == "embedding":  # a head tied to a table stays a table
                out.setdefault(name, decision)
            else:
                out[name] = decision
    return out
