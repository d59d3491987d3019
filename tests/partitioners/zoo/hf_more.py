"""More Hugging Face decoders (transformers 5.x): structures hf_decoders.py doesn't cover.

A fused projection with a model-parallel interleave, 2-D and per-head qk norms, parallel blocks,
multipliers, a mixture of attention heads, recurrent and hybrid mixers. Also the tiny-config
helpers of the other ``hf_more_*`` modules. Every layout below is read from
``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as tf

from .blocks import Blocks, element, experts, heads, per_head, per_row, rows, segments, whole
from .case import Built, Case, seeded, token_ids

V, D, H, HD, KV, FF = 64, 32, 4, 8, 2, 64
LAYERS = 2
LABELS = {i: str(i) for i in range(10)}  # a 10-class classifier head


def pixels(size: int = 16, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


def built(make: Callable[[], torch.nn.Module], *args: Any, **kwargs: Any) -> Callable[[], Built]:
    return lambda: Built(seeded(make), args, kwargs)


def expert_heads(head_dim: int) -> Blocks:
    """One block per (expert, head) of a 3-D expert weight (E, heads * head_dim, in)."""
    return lambda shape: rows(0)(shape) * shape[1] + heads(head_dim, axis=1)(shape)


def encoder(**overrides: Any) -> dict[str, Any]:
    """The BERT-like tiny encoder config keywords."""
    return (
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=D,
            num_attention_heads=H,
            intermediate_size=FF,
            vocab_size=V,
            max_position_embeddings=32,
        )
        | overrides
    )


def decoder(**overrides: Any) -> dict[str, Any]:
    """The Llama-like tiny decoder config keywords."""
    return (
        dict(
            num_hidden_layers=LAYERS,
            hidden_size=D,
            num_attention_heads=H,
            num_key_value_heads=KV,
            intermediate_size=FF,
            vocab_size=V,
        )
        | overrides
    )


def llama_layers(head_dim: int = HD) -> dict[str, Blocks]:
    return {
        "*.embed_tokens.weight": rows(),
        "*.q_proj.weight": heads(head_dim),
        "*.k_proj.weight": heads(head_dim),
        "*.v_proj.weight": rows(),
        "*.o_proj.weight": rows(),
        "*.gate_proj.weight": rows(),
        "*.up_proj.weight": rows(),
        "*.down_proj.weight": rows(),
        "*norm.weight": whole(),
        "lm_head.weight": rows(),
    }


DENSE_MLP = {"*.gate_proj.weight", "*.up_proj.weight", "*.down_proj.weight"}  # replaced by experts


def without(layout: dict[str, Blocks], names: set[str]) -> dict[str, Blocks]:
    return {k: v for k, v in layout.items() if k not in names}


def moe_experts(router: str) -> dict[str, Blocks]:
    """3-D experts gate_up_proj (E, 2*FF, D) and down_proj (E, D, FF) used as F.linear(x, W[e])."""
    return {
        "*.experts.gate_up_proj": experts(axis=1),
        "*.experts.down_proj": experts(axis=1),
        router: rows(),
    }


CASES = [
    Case(
        # CodeGen: qkv_proj viewed (B, T, mp_num=4, 3 * D/4) and split per shard as
        # query | value | key; with 8 heads of 4 each shard holds 2 query heads, 8 value rows,
        # 2 key heads; rotary on the first 2 dims of each head (rotate_every_two); biased lm_head
        "hf-codegen-mp-interleaved-qkv",
        "transformers",
        built(
            lambda: tf.CodeGenForCausalLM(
                tf.CodeGenConfig(
                    n_layer=LAYERS, n_embd=D, n_head=8, rotary_dim=2, vocab_size=V, n_positions=32
                )
            ),
            token_ids(V),
        ),
        {
            "transformer.wte.weight": rows(),
            "*.qkv_proj.weight": segments(per_head(2, 4), per_row(8), per_head(2, 4), repeat=4),
            "*.out_proj.weight": rows(),
            "*.fc_in.weight": rows(),
            "*.fc_out.weight": rows(),
            "*ln_*.weight": whole(),
            "lm_head.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # GPT-Neo: separate q/k/v (no bias), matmul attention without scaling in float32, local
        # layers by a banded causal-mask buffer; learned positions; tied head
        "hf-gpt-neo-local-attention",
        "transformers",
        built(
            lambda: tf.GPTNeoForCausalLM(
                tf.GPTNeoConfig(
                    num_layers=LAYERS,
                    hidden_size=D,
                    num_heads=H,
                    vocab_size=V,
                    max_position_embeddings=32,
                    attention_types=[[["global", "local"], 1]],
                    window_size=4,
                    intermediate_size=FF,
                )
            ),
            token_ids(V),
        ),
        {
            "transformer.wte.weight": rows(),
            "transformer.wpe.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*.c_fc.weight": rows(),
            "*.c_proj.weight": rows(),
            "*ln_*.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # Cohere: parallel attention + MLP off one bias-free LayerNorm; use_qk_norm: a LayerNorm
        # whose scale is 2-D (heads, head_dim) on each query/key head (a norm scale: one block);
        # GQA; tied head with logit_scale
        "hf-cohere-qk-norm-2d-scale",
        "transformers",
        built(lambda: tf.CohereForCausalLM(tf.CohereConfig(**decoder(use_qk_norm=True))), token_ids(V)),
        without(llama_layers(), {"lm_head.weight"}),  # the q/k norm scales match "*norm.weight"
    ),
    Case(
        # StableLM: partial rotary (25%), qkv biases, a separate LayerNorm(head_dim) for each
        # query and key head (split per head, normed, concatenated back), parallel residual
        "hf-stablelm-per-head-layernorm",
        "transformers",
        built(
            lambda: tf.StableLmForCausalLM(
                tf.StableLmConfig(**decoder(qk_layernorm=True, use_qkv_bias=True, use_parallel_residual=True))
            ),
            token_ids(V),
        ),
        llama_layers() | {"*.norms.*.weight": whole(), "*.bias": element()},
    ),
    Case(
        # Phi-1/2: q/k/v with bias, LayerNorm(head_dim) with bias on query and key heads,
        # partial rotary (50%), parallel block, fc1/fc2 MLP, "dense" output, biased lm_head
        "hf-phi-qk-layernorm-partial-rotary",
        "transformers",
        built(
            lambda: tf.PhiForCausalLM(
                tf.PhiConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    vocab_size=V,
                    qk_layernorm=True,
                )
            ),
            token_ids(V),
        ),
        {
            "*.embed_tokens.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.self_attn.dense.weight": rows(),
            "*.fc1.weight": rows(),
            "*.fc2.weight": rows(),
            "*layernorm.weight": whole(),
            "lm_head.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # GraniteMoE: embedding / residual / attention / logits multipliers, 3-D experts,
        # router weight used through F.linear
        "hf-granitemoe-multipliers",
        "transformers",
        built(
            lambda: tf.GraniteMoeForCausalLM(
                tf.GraniteMoeConfig(
                    **decoder(intermediate_size=16),
                    num_local_experts=4,
                    num_experts_per_tok=2,
                    embedding_multiplier=12.0,
                    residual_multiplier=0.22,
                    attention_multiplier=0.125,
                    logits_scaling=8.0,
                )
            ),
            token_ids(V),
        ),
        without(llama_layers(), DENSE_MLP) | moe_experts("*.router.weight"),
    ),
    Case(
        # OLMoE: RMSNorm over the whole q (H*HD) and k (KV*HD) outputs, 3-D experts, router gate
        "hf-olmoe-qk-norm-experts",
        "transformers",
        built(
            lambda: tf.OlmoeForCausalLM(
                tf.OlmoeConfig(**decoder(intermediate_size=16), num_experts=4, num_experts_per_tok=2)
            ),
            token_ids(V),
        ),
        without(llama_layers(), DENSE_MLP) | moe_experts("*.mlp.gate.weight"),
    ),
    Case(
        # JetMoE mixture of attention: the query comes from routed expert projections
        # input_linear (E, KV*HD, D) (each expert gives KV heads, top_k of them per token),
        # kv_proj = k | v (chunk); output_linear (E, D, KV*HD) per (expert, neuron); MoE MLP
        # with (E, 2*FF, D) / (E, D, FF) experts; expert_size via .tolist() (data-dependent)
        "hf-jetmoe-mixture-of-attention",
        "transformers",
        built(
            lambda: tf.JetMoeForCausalLM(
                tf.JetMoeConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_key_value_heads=KV,
                    kv_channels=HD,
                    intermediate_size=16,
                    vocab_size=V,
                    num_local_experts=4,
                    num_experts_per_tok=2,
                    max_position_embeddings=32,
                )
            ),
            token_ids(V),
        ),
        {
            "model.embed_tokens.weight": rows(),  # tied head
            "*.self_attention.experts.input_linear.weight": expert_heads(HD),
            "*.self_attention.experts.output_linear.weight": experts(axis=1),
            "*.self_attention.kv_proj.weight": segments(per_head(KV, HD), per_row(KV * HD)),
            "*.mlp.input_linear.weight": experts(axis=1),
            "*.mlp.output_linear.weight": experts(axis=1),
            "*.router.layer.weight": rows(),
            "*norm.weight": whole(),
            "*.bias": element(),
        },
        miss="warned: the mixture-of-attention query experts' heads are not read: experts.input_linear (W[i] per expert on a data-dependent token count, outputs cat'ed and index_add'ed into zeros, then viewed to heads) gets one block, named in the warning, not one per (expert, head): the row flow can't label symbolic shapes nor follow index_add (the MLP experts are right)",
    ),
    Case(
        # RecurrentGemma (Griffin): recurrent layers (linear_x -> depthwise Conv1d -> RG-LRU with
        # block-diagonal gates (H, bw, bw) used via baddbmm(bias, x, W): one block per (head,
        # output neuron); recurrent_param only through softplus: one block, a warning allowed)
        # and a local MQA attention layer with partial rotary; tied head
        "hf-recurrent-gemma-rglru",
        "transformers",
        built(
            lambda: tf.RecurrentGemmaForCausalLM(
                tf.RecurrentGemmaConfig(
                    num_hidden_layers=3,
                    hidden_size=D,
                    num_attention_heads=H,
                    num_key_value_heads=1,
                    intermediate_size=FF,
                    vocab_size=V,
                    lru_width=D,
                    attention_window_size=4,
                    conv1d_width=3,
                    block_types=["recurrent", "attention"],
                )
            ),
            token_ids(V),
        ),
        {
            "model.embed_tokens.weight": rows(),
            "*.linear_x.weight": rows(),
            "*.linear_y.weight": rows(),
            "*.linear_out.weight": rows(),
            "*.conv_1d.weight": whole(),
            "*.rg_lru.recurrent_param": whole(),
            "*.rg_lru.input_gate_weight": experts(axis=2),
            "*.rg_lru.recurrent_gate_weight": experts(axis=2),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),  # one KV head: one block
            "*.v_proj.weight": rows(),
            "*.o_proj.weight": rows(),
            "*.gate_proj.weight": rows(),
            "*.up_proj.weight": rows(),
            "*.down_proj.weight": rows(),
            "*norm.weight": whole(),
            "*bias": element(),  # linear biases and the (H, bw) gate biases
        },
        may_warn=("*.rg_lru.recurrent_param",),
    ),
    Case(
        # Jamba: layer 0 Mamba (torch path; RMSNorms on dt, B, C) + dense MLP, layer 1 GQA
        # attention + 3-D experts; A_log only through -exp: one block, a warning allowed
        "hf-jamba-hybrid",
        "transformers",
        built(
            lambda: tf.JambaForCausalLM(
                tf.JambaConfig(
                    **decoder(),
                    num_experts=4,
                    num_experts_per_tok=2,
                    expert_layer_period=2,
                    expert_layer_offset=1,
                    attn_layer_period=2,
                    attn_layer_offset=1,
                    mamba_d_state=4,
                    mamba_d_conv=3,
                    mamba_expand=2,
                    mamba_dt_rank=4,
                )
            ),
            token_ids(V),
        ),
        llama_layers()
        | moe_experts("*.router.weight")
        | {
            "*.mamba.in_proj.weight": rows(),
            "*.mamba.conv1d.weight": whole(),
            "*.mamba.x_proj.weight": rows(),
            "*.mamba.dt_proj.weight": rows(),
            "*.mamba.A_log": whole(),
            "*.mamba.D": whole(),
            "*.mamba.out_proj.weight": rows(),
            "*.bias": element(),
        },
        may_warn=("*.A_log",),
    ),
    Case(
        # RWKV-4 (CPU path): time-mixing with token shift (x * mix + shifted * (1 - mix): the
        # (1, 1, D) mix vectors are multiplied, one block), key/value/receptance/output linears,
        # time_decay only through -exp (one block, a warning allowed), time_first added to the
        # key inside the WKV recurrence (a bias: per element); channel-mixing FFN; untied head
        "hf-rwkv-time-mix",
        "transformers",
        built(
            lambda: tf.RwkvForCausalLM(
                tf.RwkvConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    attention_hidden_size=D,
                    intermediate_size=FF,
                    vocab_size=V,
                    context_length=32,
                )
            ),
            token_ids(V),
        ),
        {
            "rwkv.embeddings.weight": rows(),
            "*.time_mix_*": whole(),
            "*.time_decay": whole(),
            "*.time_first": element(),
            "*.key.weight": rows(),
            "*.value.weight": rows(),
            "*.receptance.weight": rows(),
            "*.output.weight": rows(),
            "*ln*.weight": whole(),
            "head.weight": rows(),
            "*.bias": element(),
        },
        may_warn=("*.time_decay",),
    ),
]
