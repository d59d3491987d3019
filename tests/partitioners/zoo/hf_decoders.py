"""Hugging Face decoder-only language models (transformers 5.x), tiny random configs.

Shapes used by the expectations: vocabulary V, width D, H query heads of HD, KV key/value heads,
MLP width FF. Every layout below is read from ``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

from typing import Any

import transformers as tf

from .blocks import Blocks, element, experts, heads, one, per_head, per_row, rows, segments, viewed, whole
from .case import Built, Case, seeded, token_ids

V, D, H, HD, KV, FF = 64, 32, 4, 8, 2, 64
LAYERS = 2
PARTIAL_ROTARY = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}


def causal_lm(config: tf.PretrainedConfig, attention: str | None = None) -> Built:
    """``attention``: the ``attn_implementation`` ("eager", "sdpa"); the library's default if None."""
    kwargs = {} if attention is None else {"attn_implementation": attention}
    model = seeded(lambda: tf.AutoModelForCausalLM.from_config(config, **kwargs))
    return Built(model, (token_ids(V),))


def llama_family(head_dim: int = HD) -> dict[str, Blocks]:
    """Separate q/k/v/o and a gated MLP (LlamaAttention, LlamaMLP and their copies)."""
    return {
        "*.embed_tokens.weight": rows(),  # embedding lookup: one block per token
        "*.q_proj.weight": heads(head_dim),  # view(B, T, -1, head_dim): heads along the output rows
        "*.k_proj.weight": heads(head_dim),  # GQA: KV heads of head_dim
        "*.v_proj.weight": rows(),
        "*.o_proj.weight": rows(),
        "*.gate_proj.weight": rows(),
        "*.up_proj.weight": rows(),
        "*.down_proj.weight": rows(),
        "*norm.weight": whole(),  # RMSNorm scales (input_, post_attention_, final, q/k norms)
        "lm_head.weight": rows(),  # untied output head: one block per token
    }


def llama_config(cls: type[tf.PretrainedConfig] = tf.LlamaConfig, **overrides: Any) -> tf.PretrainedConfig:
    kw: dict[str, Any] = dict(
        num_hidden_layers=LAYERS,
        hidden_size=D,
        num_attention_heads=H,
        num_key_value_heads=KV,
        intermediate_size=FF,
        vocab_size=V,
    )
    return cls(**(kw | overrides))


TIED = {"lm_head.weight"}  # tied to embed_tokens: named_parameters lists the table once
DENSE_MLP = {"*.gate_proj.weight", "*.up_proj.weight", "*.down_proj.weight"}  # replaced by experts


def without(layout: dict[str, Blocks], names: set[str]) -> dict[str, Blocks]:
    return {k: v for k, v in layout.items() if k not in names}


# DeepSeek MLA shapes: latent kv of 16, per-head nope 8 + rope 4 for q/k, v 8
MLA_LATENT, MLA_NOPE, MLA_ROPE, MLA_V = 16, 8, 4, 8
MLA_QK = MLA_NOPE + MLA_ROPE


def deepseek_config(cls: type[tf.PretrainedConfig], **overrides: Any) -> tf.PretrainedConfig:
    return llama_config(
        cls,
        num_key_value_heads=H,
        kv_lora_rank=MLA_LATENT,
        qk_nope_head_dim=MLA_NOPE,
        qk_rope_head_dim=MLA_ROPE,
        v_head_dim=MLA_V,
        n_routed_experts=4,
        num_experts_per_tok=2,
        n_shared_experts=1,
        moe_intermediate_size=16,
        first_k_dense_replace=1,
        n_group=1,
        topk_group=1,
        **overrides,
    )


def mla_layout() -> dict[str, Blocks]:
    """DeepseekV2/V3Attention + a dense layer 0 and an MoE layer 1 (3-D experts, shared expert)."""
    return {
        "*.embed_tokens.weight": rows(),
        "*.kv_a_proj_with_mqa.weight": segments(per_row(MLA_LATENT), one(MLA_ROPE)),
        "*.kv_b_proj.weight": segments(one(MLA_NOPE), per_row(MLA_V), repeat=H),
        "*.o_proj.weight": rows(),
        "*.gate_proj.weight": rows(),
        "*.up_proj.weight": rows(),
        "*.down_proj.weight": rows(),
        "*.experts.gate_up_proj": experts(axis=1),
        "*.experts.down_proj": experts(axis=1),
        "*.mlp.gate.weight": rows(),
        "*norm.weight": whole(),
        "lm_head.weight": rows(),
    }


CASES = [
    Case("hf-llama-gqa", "transformers", lambda: causal_lm(llama_config()), llama_family()),
    Case(
        # eager attention: matmul(q, k^T) * scale + causal mask, softmax in float32, dropout,
        # matmul with v (repeat_kv expands the KV heads) instead of SDPA
        "hf-llama-eager-attention",
        "transformers",
        lambda: causal_lm(llama_config(), attention="eager"),
        llama_family(),
    ),
    Case(
        "hf-mistral-sliding-window",
        "transformers",
        lambda: causal_lm(llama_config(tf.MistralConfig, sliding_window=4)),
        llama_family(),
    ),
    Case(
        "hf-qwen2-qkv-bias",
        "transformers",
        lambda: causal_lm(llama_config(tf.Qwen2Config, tie_word_embeddings=False)),
        llama_family() | {"*.bias": element()},  # q/k/v biases
    ),
    Case(
        # Gemma: explicit head_dim (H*16 != D), one KV head (MQA), tied head, (1 + w) norm scales
        "hf-gemma-mqa-head-dim",
        "transformers",
        lambda: causal_lm(llama_config(tf.GemmaConfig, num_key_value_heads=1, head_dim=16)),
        without(llama_family(head_dim=16), TIED),
    ),
    Case(
        # Gemma 2: attention logits soft-capped (tanh) before the softmax; sliding/full layers
        # alternate; pre/post feed-forward norms
        "hf-gemma2-softcap",
        "transformers",
        lambda: causal_lm(
            llama_config(
                tf.Gemma2Config,
                head_dim=HD,
                sliding_window=4,
                attn_logit_softcapping=50.0,
                final_logit_softcapping=30.0,
            )
        ),
        without(llama_family(), TIED),
    ),
    Case(
        # Qwen3: RMSNorm(head_dim) on each query and key head before rotary
        "hf-qwen3-qk-norm",
        "transformers",
        lambda: causal_lm(llama_config(tf.Qwen3Config, head_dim=HD, tie_word_embeddings=False)),
        llama_family(),
    ),
    Case(
        # OLMo 2: RMSNorm over the whole q (H*HD) and k (KV*HD) projections, before the head view
        "hf-olmo2-qk-norm",
        "transformers",
        lambda: causal_lm(llama_config(tf.Olmo2Config)),
        llama_family(),
    ),
    Case(
        # Phi-3: qkv_proj = q | k | v sliced at H*HD and (H+KV)*HD; gate_up_proj chunked in two
        "hf-phi3-fused-qkv",
        "transformers",
        lambda: causal_lm(llama_config(tf.Phi3Config, pad_token_id=0)),
        without(
            llama_family(),
            {
                "*.q_proj.weight",
                "*.k_proj.weight",
                "*.v_proj.weight",
                "*.gate_proj.weight",
                "*.up_proj.weight",
            },
        )
        | {
            "*.qkv_proj.weight": segments(per_head(H, HD), per_head(KV, HD), per_row(KV * HD)),
            "*.gate_up_proj.weight": rows(),
        },
    ),
    Case(
        # GPT-NeoX (Pythia): query_key_value viewed (B, T, H, 3*HD): q_h | k_h | v_h per head;
        # partial rotary inside each head; parallel residual; biases; untied lm_head
        "hf-gpt-neox-interleaved",
        "transformers",
        lambda: causal_lm(
            tf.GPTNeoXConfig(
                num_hidden_layers=LAYERS,
                hidden_size=D,
                num_attention_heads=H,
                intermediate_size=FF,
                vocab_size=V,
                rope_parameters=PARTIAL_ROTARY,
            )
        ),
        {
            "gpt_neox.embed_in.weight": rows(),
            "*.query_key_value.weight": segments(one(HD), one(HD), per_row(HD), repeat=H),
            "*.attention.dense.weight": rows(),
            "*.dense_h_to_4h.weight": rows(),
            "*.dense_4h_to_h.weight": rows(),
            "*layernorm.weight": whole(),
            "*.final_layer_norm.weight": whole(),
            "lm_head.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # BLOOM: query_key_value viewed (B, T, H, 3, HD) (interleaved per head); ALiBi scores via
        # baddbmm; a layer norm on the word embeddings; tied head
        "hf-bloom-alibi",
        "transformers",
        lambda: causal_lm(tf.BloomConfig(n_layer=LAYERS, hidden_size=D, n_head=H, vocab_size=V)),
        {
            "transformer.word_embeddings.weight": rows(),
            "*.query_key_value.weight": segments(one(HD), one(HD), per_row(HD), repeat=H),
            "*.self_attention.dense.weight": rows(),
            "*.dense_h_to_4h.weight": rows(),
            "*.dense_4h_to_h.weight": rows(),
            "*layernorm*.weight": whole(),
            "transformer.ln_f.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # Falcon-7B style multi-query: query_key_value viewed (B, T, H + 2, HD): H query heads,
        # then ONE key head and one value head
        "hf-falcon-mqa",
        "transformers",
        lambda: causal_lm(
            tf.FalconConfig(
                num_hidden_layers=LAYERS,
                hidden_size=D,
                num_attention_heads=H,
                vocab_size=V,
                multi_query=True,
                new_decoder_architecture=False,
                parallel_attn=True,
            )
        ),
        {
            "transformer.word_embeddings.weight": rows(),
            "*.query_key_value.weight": segments(per_head(H, HD), one(HD), per_row(HD)),
            "*.self_attention.dense.weight": rows(),
            "*.dense_h_to_4h.weight": rows(),
            "*.dense_4h_to_h.weight": rows(),
            "*.input_layernorm.weight": whole(),
            "transformer.ln_f.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # Falcon-40B style: per KV group (H/KV query heads, 1 key head, 1 value head), the key
        # and value broadcast_to the group's query heads
        "hf-falcon-new-arch-gqa",
        "transformers",
        lambda: causal_lm(
            tf.FalconConfig(
                num_hidden_layers=LAYERS,
                hidden_size=D,
                num_attention_heads=H,
                num_kv_heads=KV,
                vocab_size=V,
                new_decoder_architecture=True,
            )
        ),
        {
            "transformer.word_embeddings.weight": rows(),
            "*.query_key_value.weight": segments(per_head(H // KV, HD), one(HD), per_row(HD), repeat=KV),
            "*.self_attention.dense.weight": rows(),
            "*.dense_h_to_4h.weight": rows(),
            "*.dense_4h_to_h.weight": rows(),
            "*.ln_attn.weight": whole(),
            "*.ln_mlp.weight": whole(),
            "transformer.ln_f.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # StarCoder (GPTBigCode) multi-query: c_attn = q (D) | k (HD) | v (HD), an nn.Linear
        "hf-gpt-bigcode-mqa",
        "transformers",
        lambda: causal_lm(
            tf.GPTBigCodeConfig(
                n_layer=LAYERS, n_embd=D, n_head=H, vocab_size=V, n_positions=32, multi_query=True
            )
        ),
        {
            "transformer.wte.weight": rows(),
            "transformer.wpe.weight": rows(),  # learned positions
            "*.c_attn.weight": segments(per_head(H, HD), one(HD), per_row(HD)),
            "*.attn.c_proj.weight": rows(),
            "*.c_fc.weight": rows(),
            "*.mlp.c_proj.weight": rows(),
            "*ln_*.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # GPT-2: Conv1D stores weights (in, out): outputs along dim 1; c_attn = q | k | v
        "hf-gpt2-conv1d",
        "transformers",
        lambda: causal_lm(tf.GPT2Config(n_layer=LAYERS, n_embd=D, n_head=H, vocab_size=V, n_positions=32)),
        {
            "transformer.wte.weight": rows(),
            "transformer.wpe.weight": rows(),
            "*.c_attn.weight": segments(per_head(H, HD), per_head(H, HD), per_row(D), axis=1),
            "*.attn.c_proj.weight": rows(1),
            "*.c_fc.weight": rows(1),
            "*.mlp.c_proj.weight": rows(1),
            "*ln_*.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # OPT: learned positions (nn.Embedding, offset 2) looked up by position ids
        "hf-opt",
        "transformers",
        lambda: causal_lm(
            tf.OPTConfig(
                num_hidden_layers=LAYERS,
                hidden_size=D,
                num_attention_heads=H,
                ffn_dim=FF,
                vocab_size=V,
                max_position_embeddings=32,
                word_embed_proj_dim=D,
            )
        ),
        {
            "*.embed_tokens.weight": rows(),
            "*.embed_positions.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*.fc1.weight": rows(),
            "*.fc2.weight": rows(),
            "*layer_norm.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # Mixtral: experts as 3-D tensors gate_up_proj (E, 2*FF, D) and down_proj (E, D, FF),
        # used through F.linear(x, W[e]): outputs along dim 1, one block per (expert, row)
        "hf-mixtral-3d-experts",
        "transformers",
        lambda: causal_lm(llama_config(tf.MixtralConfig, num_local_experts=4, num_experts_per_tok=2)),
        without(llama_family(), DENSE_MLP)
        | {
            "*.experts.gate_up_proj": experts(axis=1),
            "*.experts.down_proj": experts(axis=1),
            "*.mlp.gate.weight": rows(),  # router (E, D)
        },
    ),
    Case(
        # Qwen2-MoE: 3-D experts, a shared expert MLP and its sigmoid gate Linear(D, 1)
        "hf-qwen2-moe-shared-expert",
        "transformers",
        lambda: causal_lm(
            llama_config(
                tf.Qwen2MoeConfig,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=FF // 2,
                shared_expert_intermediate_size=FF,
                tie_word_embeddings=False,
            )
        ),
        llama_family()
        | {
            "*.experts.gate_up_proj": experts(axis=1),
            "*.experts.down_proj": experts(axis=1),
            "*.mlp.gate.weight": rows(),
            "*.shared_expert_gate.weight": rows(),  # (1, D): one output neuron
            "*.bias": element(),
        },
    ),
    Case(
        # GPT-OSS: learned per-head sink logits concatenated to the scores before the softmax;
        # experts stored transposed (E, D, 2*FF) with gate/up interleaved along the outputs and
        # 2-D expert biases; router with bias
        "hf-gpt-oss-sinks",
        "transformers",
        lambda: causal_lm(
            llama_config(
                tf.GptOssConfig,
                head_dim=HD,
                num_local_experts=4,
                num_experts_per_tok=2,
                sliding_window=4,
            )
        ),
        without(llama_family(), DENSE_MLP)
        | {
            "*.self_attn.sinks": whole(),  # learned logits: explained, one block
            "*.experts.gate_up_proj": experts(axis=2),
            "*.experts.down_proj": experts(axis=2),
            "*.router.weight": rows(),
            "*bias": element(),  # q/k/v/o, expert (E, out) and router biases
        },
    ),
    Case(
        # DeepSeek-V2-Lite MLA: q_proj heads of (nope + rope); kv_a_proj_with_mqa = latent rows
        # (per neuron) | one shared rope key head; kv_b_proj per head = k_nope (one block, part
        # of that key head) | v rows; complex rotary; key assembled with new_empty + copy_.
        # Layer 0 dense MLP, layer 1 MoE with 3-D experts and a shared expert.
        "hf-deepseek-v2-mla",
        "transformers",
        lambda: causal_lm(deepseek_config(tf.DeepseekV2Config, q_lora_rank=None)),
        mla_layout() | {"*.q_proj.weight": heads(MLA_QK)},
    ),
    Case(
        # DeepSeek-V3 MLA with a query latent: q_a_proj rows (latent), q_a_layernorm, q_b_proj
        # per head of (nope + rope); sigmoid router with group-limited top-k
        "hf-deepseek-v3-mla-q-lora",
        "transformers",
        lambda: causal_lm(deepseek_config(tf.DeepseekV3Config, q_lora_rank=16)),
        mla_layout() | {"*.q_a_proj.weight": rows(), "*.q_b_proj.weight": heads(MLA_QK)},
    ),
    Case(
        # GPT-J: separate q/k/v, rotary on the first rotary_dim of each head with
        # rotate_every_two (pairs interleaved inside the head); parallel attn + MLP; biased head
        "hf-gptj-rotate-every-two",
        "transformers",
        lambda: causal_lm(
            tf.GPTJConfig(n_layer=LAYERS, n_embd=D, n_head=H, rotary_dim=4, vocab_size=V, n_positions=32)
        ),
        {
            "transformer.wte.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*.fc_in.weight": rows(),
            "*.fc_out.weight": rows(),
            "*ln_*.weight": whole(),
            "lm_head.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # Persimmon: query_key_value viewed (B, T, H, 3, HD) (per-head q_h k_h v_h), LayerNorm(HD)
        # with bias on each query and key head, rotary on half of each head
        "hf-persimmon-interleaved-qk-layernorm",
        "transformers",
        lambda: causal_lm(
            tf.PersimmonConfig(
                num_hidden_layers=LAYERS,
                hidden_size=D,
                num_attention_heads=H,
                intermediate_size=FF,
                vocab_size=V,
                qk_layernorm=True,
                rope_parameters=PARTIAL_ROTARY,
            )
        ),
        {
            "*.embed_tokens.weight": rows(),
            "*.query_key_value.weight": segments(one(HD), one(HD), per_row(HD), repeat=H),
            "*.self_attn.dense.weight": rows(),
            "*.dense_h_to_4h.weight": rows(),
            "*.dense_4h_to_h.weight": rows(),
            "*layernorm.weight": whole(),
            "lm_head.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # MPT: Wqkv chunk(3) = q | k | v; ALiBi bias added to the scores; no biases; tied head
        "hf-mpt-fused-alibi",
        "transformers",
        lambda: causal_lm(tf.MptConfig(n_layers=LAYERS, d_model=D, n_heads=H, vocab_size=V, max_seq_len=32)),
        {
            "transformer.wte.weight": rows(),
            "*.Wqkv.weight": segments(per_head(H, HD), per_head(H, HD), per_row(D)),
            "*.out_proj.weight": rows(),
            "*.up_proj.weight": rows(),
            "*.down_proj.weight": rows(),
            "*norm*.weight": whole(),
        },
    ),
    Case(
        # DBRX: Wqkv = q | k | v (GQA) clamped by clip_qkv; experts stored flat (E*FF, D) and
        # viewed (E, FF, D): w1/v1 used as x @ w[e].T (rows = (expert, ffn neuron)), w2 as
        # h @ w2[e] (outputs along D: block (expert, model neuron))
        "hf-dbrx-flat-experts",
        "transformers",
        lambda: causal_lm(
            tf.DbrxConfig(
                n_layers=LAYERS,
                d_model=D,
                n_heads=H,
                vocab_size=V,
                max_seq_len=32,
                attn_config={"kv_n_heads": KV, "clip_qkv": 8.0, "rope_theta": 10000.0},
                ffn_config={"ffn_hidden_size": 16, "moe_num_experts": 4, "moe_top_k": 2},
            )
        ),
        {
            "transformer.wte.weight": rows(),
            "*.Wqkv.weight": segments(per_head(H, HD), per_head(KV, HD), per_row(KV * HD)),
            "*.out_proj.weight": rows(),
            "*.router.layer.weight": rows(),
            "*.experts.mlp.w1": rows(),
            "*.experts.mlp.v1": rows(),
            "*.experts.mlp.w2": viewed((4, 16, D), experts(axis=2)),
            "*norm*.weight": whole(),
            "lm_head.weight": rows(),
        },
    ),
    Case(
        # Gemma 3: q/k RMSNorm per head, sliding and global layers with two rotary tables
        "hf-gemma3-qk-norm-sliding",
        "transformers",
        lambda: causal_lm(llama_config(tf.Gemma3TextConfig, head_dim=HD, sliding_window=4)),
        without(llama_family(), TIED),
    ),
    Case(
        # Starcoder2: GQA with biases everywhere, sliding window, c_fc/c_proj MLP
        "hf-starcoder2-bias-sliding",
        "transformers",
        lambda: causal_lm(llama_config(tf.Starcoder2Config, sliding_window=4, tie_word_embeddings=False)),
        without(llama_family(), DENSE_MLP)
        | {"*.c_fc.weight": rows(), "*.c_proj.weight": rows(), "*.bias": element()},
    ),
    Case(
        # Qwen3-MoE: q/k norms and 3-D experts in every layer
        "hf-qwen3-moe",
        "transformers",
        lambda: causal_lm(
            llama_config(
                tf.Qwen3MoeConfig,
                head_dim=HD,
                num_experts=4,
                num_experts_per_tok=2,
                moe_intermediate_size=16,
                tie_word_embeddings=False,
            )
        ),
        without(llama_family(), DENSE_MLP)
        | {
            "*.experts.gate_up_proj": experts(axis=1),
            "*.experts.down_proj": experts(axis=1),
            "*.mlp.gate.weight": rows(),
        },
    ),
]
