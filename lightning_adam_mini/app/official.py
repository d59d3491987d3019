"""The official Adam-mini (``adam_mini.Adam_mini`` v1.1.1) as an app optimizer, for side-by-side runs.

``lam-train experiment=llama_text optimizer=adam_mini_official`` trains with the authors' package
(in the ``dev`` extra, not a runtime dependency). It finds blocks by parameter *names*, so use it on
a model whose names it knows (the Llama demo: ``embed_tokens``, ``q_proj``/``k_proj``, ``v_proj``,
``o_proj``, ``mlp``, ``lm_head``); ``dim``, ``n_heads`` and ``n_kv_heads`` default to the model's
config. Its weight-decay rule is its own (none for names holding ``norm``, ``ln`` or ``bias``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torch.optim import Optimizer

from .plans import model_config_value


def official_adam_mini(
    model: nn.Module,
    lr: float = 1e-3,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    dim: int | None = None,
    n_heads: int | None = None,
    n_kv_heads: int | None = None,
    verbose: bool = True,
) -> Optimizer:
    """``adam_mini.Adam_mini(model.named_parameters(), ...)``; ``dim``/``n_heads``/``n_kv_heads``
    default to the model's ``cfg`` (``dim``|``n_embd``, ``n_heads``|``n_head``, ``n_kv_heads``)."""
    try:
        from adam_mini import Adam_mini
    except ImportError as err:
        raise ImportError(
            "optimizer=adam_mini_official needs the official package: pip install adam-mini==1.1.1 "
            '(or pip install -e ".[dev]")'
        ) from err
    dim = dim or model_config_value(model, "dim", "n_embd")
    n_heads = n_heads or model_config_value(model, "n_heads", "n_head")
    if dim is None or n_heads is None:
        raise ValueError(
            "optimizer=adam_mini_official: the model has no cfg with dim/n_embd and n_heads/n_head; "
            "give optimizer.dim and optimizer.n_heads"
        )
    return Adam_mini(
        model.named_parameters(),
        lr=lr,
        betas=(betas[0], betas[1]),
        eps=eps,
        weight_decay=weight_decay,
        dim=dim,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads or model_config_value(model, "n_kv_heads") or n_heads,
        verbose=verbose,
    )
