"""The official Adam-mini v1.1.1 partition, by parameter-name substrings (compatibility mode).

This reproduces ``adam_mini.Adam_mini``'s rules exactly, including their blind spots (fused QKV,
transposed Conv1D weights, explicit head_dim): use it as a baseline or for checkpoints made with
the official package. The graph partitioner (:func:`partitioners.auto_partition`) is the default.

Rules, in order, on the lower-cased name:
1. contains ``bias``                                   -> per element (plain Adam)
2. contains a query/key name                           -> one block per ``dim*dim/n_heads`` elements
3. contains an embedding/output/value/attn-proj/MLP name -> one block per row (dim 0)
4. anything else                                       -> one block for the whole tensor
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from .layout import BlockLayout
from .plan import PartitionPlan, PlanEntry

EMBEDDING_NAMES = frozenset({"embed", "embd", "wte"})
OUTPUT_NAMES = frozenset({"lm_head", "output", "final_layer"})
QUERY_NAMES = frozenset({"q_proj", "wq", "query"})
KEY_NAMES = frozenset({"k_proj", "wk", "key"})
VALUE_NAMES = frozenset({"v_proj", "wv", "value"})
ATTN_OUT_NAMES = frozenset({"o_proj", "wo", "attn.proj"})
MLP_NAMES = frozenset({"feed_forward", "linear", "mlp"})

# (role, names) in the official priority order for rule 3.
_PER_ROW_RULES = (
    ("embedding", EMBEDDING_NAMES),
    ("output", OUTPUT_NAMES),
    ("value", VALUE_NAMES),
    ("linear", MLP_NAMES),
    ("attn_out", ATTN_OUT_NAMES),
)


def _has(name: str, keys: frozenset[str]) -> bool:
    return any(k in name for k in keys)


def _named_trainable(model_or_params: nn.Module | Iterable[tuple[str, torch.Tensor]]):
    items = model_or_params.named_parameters() if isinstance(model_or_params, nn.Module) else model_or_params
    return [(n, p) for n, p in items if p.requires_grad]


def name_partition(
    model_or_params: nn.Module | Iterable[tuple[str, torch.Tensor]],
    *,
    dim: int = 2048,
    n_heads: int = 32,
    n_kv_heads: int | None = None,
) -> PartitionPlan:
    """Plan by the official name rules; ``dim``/``n_heads`` as given to ``adam_mini.Adam_mini``.

    ``n_kv_heads`` is accepted for signature compatibility; as in the official code, key blocks
    are ``dim*dim/n_heads`` elements regardless (one per kv head for a GQA key projection).
    """
    if n_heads <= 0 or (dim * dim) % n_heads:
        raise ValueError(f"dim*dim={dim * dim} must split into n_heads={n_heads} equal heads")
    if n_kv_heads is not None and (n_kv_heads <= 0 or n_heads % n_kv_heads):
        raise ValueError(f"n_heads={n_heads} must be a multiple of n_kv_heads={n_kv_heads}")
    head_numel = dim * dim // n_heads
    entries = []
    for name, p in _named_trainable(model_or_params):
        low = name.lower()
        shape = tuple(p.shape)
        if "bias" in low:
            role, layout = "bias", BlockLayout.element()
        elif _has(low, QUERY_NAMES | KEY_NAMES):
            row_numel = math.prod(shape[1:])
            if p.ndim < 2 or head_numel % row_numel or shape[0] % (head_numel // row_numel):
                raise ValueError(
                    f"parameter {name!r} {shape} does not split into heads of {head_numel} "
                    f"elements (dim={dim}, n_heads={n_heads}); pass the model's dim and n_heads"
                )
            role = "query" if _has(low, QUERY_NAMES) else "key"
            layout = BlockLayout.rows(0, group=head_numel // row_numel)
        else:
            role, layout = next(
                ((r, BlockLayout.rows(0)) for r, keys in _PER_ROW_RULES if _has(low, keys)),
                ("norm" if p.ndim == 1 else "other", BlockLayout.tensor()),
            )
        entries.append((name, PlanEntry(shape, role, layout, "names")))
    return PartitionPlan(entries)
