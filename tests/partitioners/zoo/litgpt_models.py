"""litgpt 0.5.x ``GPT`` models (what Lightning users pretrain and fine-tune), tiny configs.

Read from ``litgpt/model.py``: ``CausalSelfAttention.qkv`` is one ``nn.Linear`` whose output is
split ``(n_head*hs, n_query_groups*hs, n_query_groups*hs)`` into q | k | v (litgpt 0.5 no longer
interleaves per query group: old checkpoints are reassembled by ``qkv_reassemble`` on load);
then each part is viewed (B, T, heads, hs) and rotary applies to the first ``rope_n_elem`` of
every head. The MLPs: ``GptNeoxMLP`` (fc, proj), ``LLaMAMLP``/``GemmaMLP`` (fc_1, fc_2, proj),
``LLaMAMoE`` (router ``gate`` + a ``ModuleList`` of ``LLaMAMLP`` experts). ``lm_head`` is never
tied in the module.
"""

from __future__ import annotations

from typing import Any

from litgpt import GPT, Config

from .blocks import Blocks, element, per_head, per_row, rows, segments, whole
from .case import Built, Case, seeded, token_ids

V, D, H, FF = 64, 32, 4, 64


def gpt(**overrides: Any) -> Built:
    kw: dict[str, Any] = dict(
        block_size=16,
        n_layer=2,
        n_embd=D,
        n_head=H,
        vocab_size=V,
        padded_vocab_size=V,
        intermediate_size=FF,
    )
    config = Config(**(kw | overrides))
    return Built(seeded(lambda: GPT(config)), (token_ids(V),))


def litgpt_layout(
    head_size: int, groups: int, mlp: dict[str, Blocks], bias: bool = False
) -> dict[str, Blocks]:
    layout = {
        "transformer.wte.weight": rows(),
        "*.attn.qkv.weight": segments(
            per_head(H, head_size), per_head(groups, head_size), per_row(groups * head_size)
        ),
        "*.attn.proj.weight": rows(),
        **mlp,
        "*norm*.weight": whole(),  # norm_1, norm_2, norm_q/k, post_*_norm
        "transformer.ln_f.weight": whole(),
        "lm_head.weight": rows(),
    }
    return layout | ({"*.bias": element()} if bias else {})


LLAMA_MLP = {"*.fc_1.weight": rows(), "*.fc_2.weight": rows(), "*.mlp*.proj.weight": rows()}
NEOX_MLP = {"*.mlp.fc.weight": rows(), "*.mlp.proj.weight": rows()}
LLAMA = dict(
    bias=False,
    norm_class_name="RMSNorm",
    mlp_class_name="LLaMAMLP",
    parallel_residual=False,
    rotary_percentage=1.0,
)

CASES = [
    Case(
        "litgpt-llama-gqa",
        "litgpt",
        lambda: gpt(**LLAMA, n_query_groups=2),
        litgpt_layout(8, 2, LLAMA_MLP),
    ),
    Case(
        # Pythia / GPT-NeoX: LayerNorm with bias, parallel residual, rotary on 1/4 of each head
        "litgpt-pythia",
        "litgpt",
        lambda: gpt(rotary_percentage=0.25, parallel_residual=True, bias=True),
        litgpt_layout(8, H, NEOX_MLP, bias=True),
    ),
    Case(
        # Phi-2: one shared norm for attention and MLP, partial rotary, biased output head
        "litgpt-phi2",
        "litgpt",
        lambda: gpt(
            rotary_percentage=0.5,
            shared_attention_norm=True,
            parallel_residual=True,
            bias=True,
            lm_head_bias=True,
            gelu_approximate="tanh",
        ),
        litgpt_layout(8, H, NEOX_MLP, bias=True),
    ),
    Case(
        # Gemma: one query group (MQA: a single key head broadcast to all), explicit head size
        # (H * 16 != D), scaled embeddings, GemmaMLP
        "litgpt-gemma-mqa",
        "litgpt",
        lambda: gpt(
            **(LLAMA | {"mlp_class_name": "GemmaMLP"}),
            n_query_groups=1,
            head_size=16,
            scale_embeddings=True,
        ),
        litgpt_layout(16, 1, LLAMA_MLP),
    ),
    Case(
        # Gemma 2: soft-capped attention logits (tanh), post-attention/-MLP norms, sliding
        # window on every other layer, soft-capped final logits
        "litgpt-gemma2-softcap",
        "litgpt",
        lambda: gpt(
            **(LLAMA | {"mlp_class_name": "GemmaMLP"}),
            n_query_groups=2,
            head_size=8,
            attention_logit_softcapping=50.0,
            final_logit_softcapping=30.0,
            post_attention_norm=True,
            post_mlp_norm=True,
            sliding_window_size=4,
            sliding_window_indices=[1, 0],
        ),
        litgpt_layout(8, 2, LLAMA_MLP),
    ),
    Case(
        # Qwen3-style: RMSNorm(hs) on each query and key head (norm_qk, type "default")
        "litgpt-qwen3-qk-norm",
        "litgpt",
        lambda: gpt(**LLAMA, n_query_groups=2, norm_qk=True),
        litgpt_layout(8, 2, LLAMA_MLP),
    ),
    Case(
        # Mixtral-style LLaMAMoE: router Linear(D, E) + per-expert nn.Linear experts, routed
        # with topk / torch.where / index_put (data-dependent sizes)
        "litgpt-llama-moe-per-expert-linear",
        "litgpt",
        lambda: gpt(
            **(LLAMA | {"mlp_class_name": "LLaMAMoE"}),
            n_query_groups=2,
            n_expert=4,
            n_expert_per_token=2,
            moe_intermediate_size=16,
        ),
        litgpt_layout(8, 2, LLAMA_MLP) | {"*.mlp.gate.weight": rows()},
    ),
]
