"""torch.nn attention modules in their modes (torch 2.x ``F.multi_head_attention_forward``).

Read from ``torch/nn/modules/activation.py`` and ``torch/nn/functional.py``: with
``_qkv_same_embed_dim`` the projections are one packed ``in_proj_weight`` (3E, E) = q | k | v
(``_in_projection_packed``: one linear + unflatten when query is key is value, ``w.split([E, 2E])``
when key is value, ``chunk(3)`` otherwise); with ``kdim``/``vdim`` they are ``q_proj_weight``
(E, E), ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim). Heads are ``view(T, B*H, hd)``
of the projected (T, B, E) sequence, i.e. consecutive output rows. ``bias_k``/``bias_v`` (1, 1, E)
are one extra learned key/value position concatenated to the sequence.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .blocks import Blocks, element, heads, per_head, per_row, rows, segments, whole
from .case import Built, Case, seeded

E, H, HD, FF, T, S, B = 32, 4, 8, 64, 6, 5, 2


def seq(length: int = T, width: int = E, batch_first: bool = False) -> torch.Tensor:
    shape = (B, length, width) if batch_first else (length, B, width)
    return torch.randn(shape, generator=torch.Generator().manual_seed(length * 100 + width))


class SelfAttention(nn.Module):
    """``mha(x, x, x)``: the self-attention call every torch transformer makes."""

    def __init__(self, **mha_kwargs: Any) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(E, H, **mha_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mha(x, x, x, need_weights=False)[0]


class CrossAttention(nn.Module):
    """``mha(x, memory, memory)``: queries from one sequence, keys and values from another."""

    def __init__(self, **mha_kwargs: Any) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(E, H, **mha_kwargs)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        return self.mha(x, memory, memory)[0]


class SelfAttentionWithWeights(SelfAttention):
    """The default ``need_weights=True``: the averaged attention weights are used too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, weights = self.mha(x, x, x)
        return out + weights.sum()


class KeyValueWidths(nn.Module):
    """``mha(q, k, v)`` with keys of width 12 and values of width 20: separate q/k/v weights."""

    def __init__(self) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(E, H, kdim=12, vdim=20)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self.mha(q, k, v)[0]


PACKED: dict[str, Blocks] = {
    "*in_proj_weight": segments(per_head(H, HD), per_head(H, HD), per_row(E)),
    "*out_proj.weight": rows(),
}
LAYER: dict[str, Blocks] = {
    **PACKED,
    "*linear1.weight": rows(),
    "*linear2.weight": rows(),
    "*norm*.weight": whole(),
    "*bias": element(),  # in_proj_bias, out_proj.bias, linear and norm biases
}

CASES = [
    Case(
        # sequence-first (T, B, E) self-attention through the packed projection
        "torch-mha-self-seq-first",
        "torch",
        lambda: Built(seeded(lambda: SelfAttention(batch_first=False)), (seq(),)),
        PACKED | {"*bias": element()},
    ),
    Case(
        # batch-first cross-attention: in_proj split [E, 2E] (q from x, k|v from memory)
        "torch-mha-cross-batch-first",
        "torch",
        lambda: Built(
            seeded(lambda: CrossAttention(batch_first=True)),
            (seq(batch_first=True), seq(S, batch_first=True)),
        ),
        PACKED | {"*bias": element()},
    ),
    Case(
        # kdim/vdim != E: separate q/k/v weights, keys of width 12, values of width 20
        "torch-mha-kdim-vdim",
        "torch",
        lambda: Built(
            seeded(lambda: KeyValueWidths()),
            (seq(), seq(S, 12), seq(S, 20)),
        ),
        {
            "*.q_proj_weight": heads(HD),
            "*.k_proj_weight": heads(HD),
            "*.v_proj_weight": rows(),
            "*.out_proj.weight": rows(),
            "*bias": element(),
        },
    ),
    Case(
        # add_bias_kv: a learned key and value position appended to the keys/values (like sink
        # logits, explained: one block each); add_zero_attn; no projection biases
        "torch-mha-bias-kv",
        "torch",
        lambda: Built(
            seeded(lambda: SelfAttention(add_bias_kv=True, add_zero_attn=True, bias=False)),
            (seq(),),
        ),
        {**PACKED, "*.bias_k": whole(), "*.bias_v": whole()},
    ),
    Case(
        "torch-encoder-layer-norm-first",
        "torch",
        lambda: Built(
            seeded(lambda: nn.TransformerEncoderLayer(E, H, FF, batch_first=True, norm_first=True)),
            (seq(batch_first=True),),
        ),
        LAYER,
    ),
    Case(
        # sequence-first decoder layer: packed self-attention and cross-attention on memory
        "torch-decoder-layer-seq-first",
        "torch",
        lambda: Built(seeded(lambda: nn.TransformerDecoderLayer(E, H, FF)), (seq(), seq(S))),
        LAYER,
    ),
    Case(
        # nn.Transformer (sequence-first), a causal target mask given as a float mask
        "torch-transformer-seq-first",
        "torch",
        lambda: Built(
            seeded(
                lambda: nn.Transformer(E, H, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=FF)
            ),
            (seq(S), seq()),
            {"tgt_mask": nn.Transformer.generate_square_subsequent_mask(T)},
        ),
        LAYER,
    ),
    Case(
        # need_weights=True (the default): not SDPA but baddbmm/bmm on (B*H, T, HD) + softmax
        "torch-mha-self-need-weights",
        "torch",
        lambda: Built(seeded(lambda: SelfAttentionWithWeights()), (seq(),)),
        PACKED | {"*bias": element()},
    ),
    Case(
        # batch-first encoder stack with a key padding mask (merged into the attention mask)
        "torch-encoder-stack-padding-mask",
        "torch",
        lambda: Built(
            seeded(
                lambda: nn.TransformerEncoder(
                    nn.TransformerEncoderLayer(E, H, FF, batch_first=True),
                    num_layers=2,
                    enable_nested_tensor=False,
                )
            ),
            (seq(batch_first=True),),
            {"src_key_padding_mask": torch.tensor([[False] * T, [False] * (T - 2) + [True] * 2])},
        ),
        LAYER,
    ),
]
