"""More Hugging Face token mixers (transformers 5.x): linear attention, gated and differential
attention, short convolutions, hybrids, and a few encoders with unusual position handling.

Linear attention has no softmax, but its queries and keys are still contracted per head
(``q_h . k_h`` weights the values of head h only), so their projections are one block per head,
as for softmax attention. Every layout below is read from
``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

import torch
import transformers as tf

from .blocks import Blocks, element, experts, heads, one, per_head, per_row, rows, segments, whole
from .case import Case, token_ids
from .hf_more import FF, HD, LAYERS, D, H, V, built, decoder


def attention(head_dim: int = HD, out: str = "*.o_proj.weight") -> dict[str, Blocks]:
    """Separate q/k/v and an output projection."""
    return {
        "*.q_proj.weight": heads(head_dim),
        "*.k_proj.weight": heads(head_dim),
        "*.v_proj.weight": rows(),
        out: rows(),
    }


GATED_MLP = {"*.gate_proj.weight": rows(), "*.up_proj.weight": rows(), "*.down_proj.weight": rows()}
EXPERTS = {"*.experts.gate_up_proj": experts(axis=1), "*.experts.down_proj": experts(axis=1)}
HEAD = {"*.embed_tokens.weight": rows(), "lm_head.weight": rows()}
NORMS = {"*norm.weight": whole()}

CASES = [
    Case(
        # Qwen3-Next: layer 0 Gated DeltaNet: in_proj_qkvz viewed (B, T, key heads, ...) and split
        # per key head into q (8) | k (8) | v (2 value heads of 8) | z (16), q/k L2-normed per
        # head in the chunked delta rule (no softmax) after a depthwise causal Conv1d over q|k|v;
        # in_proj_ba per key head b | a; A_log (one block, warning allowed) and dt_bias (a bias);
        # gated RMSNorm. Layer 1 gated attention: q_proj viewed (B, T, H, 2 * HD) and chunked per
        # head into query (8) | output gate (8). MoE with a shared expert in both layers
        "hf-qwen3-next-gated-deltanet",
        "transformers",
        built(
            lambda: tf.Qwen3NextForCausalLM(
                tf.Qwen3NextConfig(
                    **decoder(head_dim=HD),
                    linear_num_value_heads=4,
                    linear_num_key_heads=2,
                    linear_key_head_dim=8,
                    linear_value_head_dim=8,
                    linear_conv_kernel_dim=3,
                    num_experts=4,
                    num_experts_per_tok=2,
                    moe_intermediate_size=16,
                    shared_expert_intermediate_size=16,
                    layer_types=["linear_attention", "full_attention"],
                )
            ),
            token_ids(V),
        ),
        {
            "*.self_attn.q_proj.weight": segments(one(HD), per_row(HD), repeat=H),
            "*.in_proj_qkvz.weight": segments(one(8), one(8), per_row(16), per_row(16), repeat=2),
            "*.in_proj_ba.weight": rows(),
            "*.linear_attn.conv1d.weight": whole(),
            "*.linear_attn.A_log": whole(),
            "*.linear_attn.dt_bias": element(),
            "*.linear_attn.out_proj.weight": rows(),
            "*.mlp.gate.weight": rows(),
            "*.shared_expert_gate.weight": rows(),
        }
        | HEAD
        | NORMS
        | EXPERTS
        | GATED_MLP
        | {k: v for k, v in attention().items() if k != "*.q_proj.weight"},
        may_warn=("*.A_log",),
    ),
    Case(
        # MiniMax: layer 0 lightning (linear) attention: qkv_proj -> SiLU -> reshape (B, T, H,
        # 3 * HD) split per head into q | k | v, block-wise q k^T with decay masks and a carried
        # k^T v state (no softmax), RMSNorm, sigmoid output_gate; layer 1 softmax GQA attention;
        # 3-D experts
        "hf-minimax-lightning-attention",
        "transformers",
        built(
            lambda: tf.MiniMaxForCausalLM(
                tf.MiniMaxConfig(
                    **decoder(head_dim=HD),
                    num_local_experts=4,
                    num_experts_per_tok=2,
                    layer_types=["linear_attention", "full_attention"],
                    block_size=4,
                )
            ),
            token_ids(V),
        ),
        HEAD
        | NORMS
        | EXPERTS
        | attention()
        | {
            "*.qkv_proj.weight": segments(one(HD), one(HD), per_row(HD), repeat=H),
            "*.output_gate.weight": rows(),
            "*.self_attn.out_proj.weight": rows(),
            "*.mlp.gate.weight": rows(),
        },
    ),
    Case(
        # LFM2: short-convolution blocks (in_proj -> B | C | x chunk(3) along channels, B * x,
        # depthwise causal Conv1d, C * conv, out_proj) and GQA attention with per-head q/k
        # LayerNorm; SwiGLU w1/w3/w2; tied head
        "hf-lfm2-short-conv",
        "transformers",
        built(
            lambda: tf.Lfm2ForCausalLM(
                tf.Lfm2Config(
                    **decoder(
                        layer_types=["conv", "full_attention"], conv_L_cache=3, block_auto_adjust_ff_dim=False
                    )
                )
            ),
            token_ids(V),
        ),
        {
            "model.embed_tokens.weight": rows(),
            "*.conv.conv.weight": whole(),
            "*.conv.in_proj.weight": rows(),
            "*.conv.out_proj.weight": rows(),
            "*.feed_forward.w?.weight": rows(),
            "*norm.weight": whole(),
        }
        | attention(out="*.self_attn.out_proj.weight"),
    ),
    Case(
        # Falcon-H1: Mamba-2 mixer and GQA attention in parallel in every layer, with muP
        # multipliers (buffers); in_proj = z | xBC | dt; A_log only through -exp (one block,
        # a warning allowed); untied head. The SSD's B and C (one group) are the key and query
        # of a linear attention shared by all heads: one block each
        "hf-falcon-h1-parallel-hybrid",
        "transformers",
        built(
            lambda: tf.FalconH1ForCausalLM(
                tf.FalconH1Config(
                    **decoder(head_dim=HD),
                    mamba_d_ssm=32,
                    mamba_n_heads=4,
                    mamba_d_head=8,
                    mamba_n_groups=1,
                    mamba_d_state=8,
                    mamba_d_conv=3,
                    mamba_chunk_size=4,
                )
            ),
            token_ids(V),
        ),
        HEAD
        | NORMS
        | GATED_MLP
        | attention()
        | {
            "*.mamba.in_proj.weight": segments(per_row(2 * 32), one(8), one(8), per_row(4)),
            "*.mamba.conv1d.weight": whole(),
            "*.mamba.A_log": whole(),
            "*.mamba.D": whole(),
            "*.mamba.out_proj.weight": rows(),
            "*bias": element(),
        },
        may_warn=("*.A_log",),
    ),
    Case(
        # DiffLlama (differential attention): two attentions over the same q/k heads with the
        # value heads split in halves, combined as out1 - lambda * out2 where lambda =
        # exp(sum(lambda_q1 * lambda_k1)) - exp(sum(lambda_q2 * lambda_k2)) + init: the four
        # (HD,) lambda vectors enter only through that scalar (one block each, a warning allowed)
        "hf-diffllama-differential",
        "transformers",
        built(lambda: tf.DiffLlamaForCausalLM(tf.DiffLlamaConfig(**decoder())), token_ids(V)),
        HEAD | NORMS | GATED_MLP | attention() | {"*.self_attn.lambda_*": whole()},
        may_warn=("*.lambda_*",),
    ),
    Case(
        # Apertus: xIELU activation with two learned scalars alpha_p, alpha_n (1,) (one block each,
        # explained as learned scalars); q/k RMSNorm per head; up/down MLP without a gate
        "hf-apertus-xielu-scalars",
        "transformers",
        built(lambda: tf.ApertusForCausalLM(tf.ApertusConfig(**decoder())), token_ids(V)),
        HEAD
        | NORMS
        | attention()
        | {"*.up_proj.weight": rows(), "*.down_proj.weight": rows(), "*.act_fn.alpha_?": whole()},
    ),
    Case(
        # Doge: dynamic-mask attention (dt_proj on the values, exp(A * softplus(dt)) added to the
        # scores as a mask, top-k over keys; A (KV,) enters only through that exp: one block, a
        # warning allowed), learned residual scales (D,) multiplied (one block), and a
        # cross-domain MoE whose experts are rows of two nn.Embedding tables looked up by
        # product-key routing (one block per row)
        "hf-doge-dynamic-mask-embedding-experts",
        "transformers",
        built(
            lambda: tf.DogeForCausalLM(
                tf.DogeConfig(
                    **decoder(num_experts=16, num_experts_per_tok=2, is_moe=True, keep_window_size=4)
                )
            ),
            token_ids(V),
        ),
        HEAD
        | NORMS
        | GATED_MLP
        | attention()
        | {
            "*.self_attn.A": whole(),
            "*.dt_proj.weight": rows(),
            "*_residual": whole(),
            "*.router_gate.weight": rows(),
            "*_embed.weight": rows(),
        },
        may_warn=("*.self_attn.A",),
    ),
    Case(
        # ESM-2: rotary (rotate_half) on q/k, token dropout rescaling of the embeddings, pre-LN
        # BERT-style layers; the contact head (Linear over attention maps) is not used by the MLM
        # output; tied decoder
        "hf-esm-rotary-token-dropout",
        "transformers",
        built(
            lambda: tf.EsmForMaskedLM(
                tf.EsmConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    vocab_size=V,
                    max_position_embeddings=40,
                    position_embedding_type="rotary",
                    pad_token_id=1,
                    mask_token_id=2,
                    token_dropout=True,
                )
            ),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.self.query.weight": heads(HD),
            "*.self.key.weight": heads(HD),
            "*.self.value.weight": rows(),
            "*.dense.weight": rows(),
            "*.contact_head.regression.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*layer_norm*.weight": whole(),
            "*bias": element(),
        },
        may_warn=("*.contact_head.*",),  # not called by the MLM forward: not in the graph
    ),
    Case(
        # Reformer (reversible layers): a local chunked attention layer (query/key/value) and an
        # LSH attention layer whose ONE query_key projection gives both queries and (normalized)
        # keys, hashed by random rotations, sorted into chunks; scores normalized by logsumexp;
        # axial position embeddings: weights (4, 1, 16) and (1, 4, 16) broadcast over a 4x4
        # grid and concatenated (one block per row along each table's axis)
        "hf-reformer-lsh-axial",
        "transformers",
        built(
            lambda: tf.ReformerModelWithLMHead(
                tf.ReformerConfig(
                    attn_layers=["local", "lsh"],
                    hidden_size=D,
                    num_attention_heads=H,
                    attention_head_size=HD,
                    feed_forward_size=FF,
                    vocab_size=V,
                    axial_pos_shape=[4, 4],
                    axial_pos_embds_dim=[16, 16],
                    max_position_embeddings=16,
                    local_attn_chunk_length=4,
                    lsh_attn_chunk_length=4,
                    num_buckets=2,
                    num_hashes=1,
                    is_decoder=True,
                )
            ),
            token_ids(V, seq=16),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weights.0": rows(0),
            "*.position_embeddings.weights.1": rows(1),
            "*.self_attention.query.weight": heads(HD),
            "*.self_attention.key.weight": heads(HD),
            "*.self_attention.query_key.weight": heads(HD),
            "*.self_attention.value.weight": rows(),
            "*.dense.weight": rows(),
            "lm_head.decoder.weight": rows(),
            "*layer_norm.weight": whole(),
            "*bias": element(),
        },
        miss="warned: LSH attention sorts queries/keys by hash (a gather by data-dependent indices) and the row flow stops there: query_key one block, named in the warning, not per head (the local attention layer is right); axial position tables (broadcast + cat) other, warned",
    ),
    Case(
        # DINOv3 ViT: class token, 2 register tokens and a mask token (used: bool_masked_pos),
        # 2-D rotary on the patch tokens only (prefix tokens sliced off and concatenated back),
        # LayerScale, no k bias
        "hf-dinov3-registers-patch-rope",
        "transformers",
        built(
            lambda: tf.DINOv3ViTModel(
                tf.DINOv3ViTConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    image_size=16,
                    patch_size=4,
                    num_register_tokens=2,
                    layerscale_value=0.1,
                )
            ),
            torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)),
            bool_masked_pos=torch.arange(32).reshape(2, 16) % 3 == 0,
        ),
        {
            "embeddings.register_tokens": rows(1),  # learned tokens: one block per token
            "embeddings.*_token*": whole(),
            "embeddings.patch_embeddings.weight": whole(),
            "*.lambda1": whole(),
            "*.mlp.*_proj.weight": rows(),
            "*norm*.weight": whole(),
            "*bias": element(),
        }
        | attention(),
    ),
    Case(
        # Zamba2: Mamba-2 layers and a hybrid layer whose SHARED transformer block attends over
        # cat(hidden, original embeddings) (2D wide: heads of 16) with per-call LoRA adapters
        # added to q/k/v and gate_up outputs: the q/k adapters' up-projections (2D, rank) write
        # into the query/key heads (one block per head), their down-projections are latent rows
        "hf-zamba2-shared-block-lora-adapters",
        "transformers",
        built(
            lambda: tf.Zamba2ForCausalLM(
                tf.Zamba2Config(
                    **decoder(num_key_value_heads=H),  # the k adapter writes 2D: no GQA
                    mamba_d_state=8,
                    mamba_d_conv=3,
                    mamba_expand=2,
                    mamba_ngroups=1,
                    mamba_headdim=8,  # pyright: ignore[reportCallIssue]
                    n_mamba_heads=8,
                    chunk_size=4,
                    layers_block_type=["mamba", "hybrid"],
                    num_mem_blocks=1,
                    use_shared_attention_adapter=True,
                    adapter_rank=4,
                    use_mem_rope=True,
                )
            ),
            token_ids(V),
        ),
        {
            "*.linear_q_adapter_list.*.1.weight": heads(16),
            "*.linear_k_adapter_list.*.1.weight": heads(16),
            "*_adapter_list.*.weight": rows(),
            "*.gate_up_proj.weight": rows(),
            "*.down_proj.weight": rows(),
            "model.layers.1.linear.weight": rows(),
            # z | x per row, then B and C (one group each: a shared key and query of the SSD's
            # bilinear form, as for hf-mamba2-ssd), then dt per row
            "*.mamba.in_proj.weight": segments(per_row(2 * 64), one(8), one(8), per_row(8)),
            "*.mamba.conv1d.weight": whole(),
            "*.mamba.A_log": whole(),
            "*.mamba.D": whole(),
            "*.mamba.out_proj.weight": rows(),
            "model.embed_tokens.weight": rows(),  # tied head
            "*norm.weight": whole(),
            "*bias": element(),
        }
        | attention(head_dim=16),
        may_warn=("*.A_log",),
    ),
    Case(
        # Gemma 3n text: AltUp (2 parallel streams: projections in/out, a router Linear(D, 2),
        # prediction / correction coefficient Linears, a learned output scale), LAuReL low-rank
        # residual, per-layer inputs (a (V, layers * 8) embedding table viewed per layer, gated
        # and projected in each layer), activation sparsity (gaussian top-k) in layer 0,
        # q/k/v norms; tied head
        "hf-gemma3n-altup-laurel-per-layer-embeddings",
        "transformers",
        built(
            lambda: tf.Gemma3nForCausalLM(
                tf.Gemma3nTextConfig(
                    **decoder(head_dim=HD, intermediate_size=[FF, FF]),
                    num_kv_shared_layers=0,
                    vocab_size_per_layer_input=V,
                    hidden_size_per_layer_input=8,
                    altup_num_inputs=2,
                    laurel_rank=4,
                    layer_types=["sliding_attention", "full_attention"],
                    sliding_window=4,
                    activation_sparsity_pattern=[0.95, 0.0],
                )
            ),
            token_ids(V),
        ),
        {
            "model.embed_tokens.weight": rows(),
            "model.embed_tokens_per_layer.weight": rows(),
            "*norm.weight": whole(),  # before the altup / per_layer patterns: router_norm, ...
            "*.altup.correct_output_scale": whole(),
            "*.altup.*.weight": rows(),
            "*.laurel.linear_*.weight": rows(),
            "*.per_layer_*.weight": rows(),
            "*.altup_*projections.*.weight": rows(),
        }
        | GATED_MLP
        | attention(),
    ),
    Case(
        # Nemotron: LayerNorm1P (weight + 1, with bias), squared-ReLU up/down MLP, partial rotary
        "hf-nemotron-layernorm1p",
        "transformers",
        built(lambda: tf.NemotronForCausalLM(tf.NemotronConfig(**decoder(head_dim=HD))), token_ids(V)),
        HEAD
        | NORMS
        | attention()
        | {"*.up_proj.weight": rows(), "*.down_proj.weight": rows(), "*bias": element()},
    ),
    Case(
        # GLM-4: interleaved partial rotary (cos/sin repeat_interleave, rotate pairs), fused
        # gate_up_proj chunked in two, post-attention and post-MLP RMSNorms, qkv biases
        "hf-glm4-interleaved-partial-rotary",
        "transformers",
        built(
            lambda: tf.Glm4ForCausalLM(tf.Glm4Config(**decoder(head_dim=HD, pad_token_id=0))), token_ids(V)
        ),
        HEAD
        | NORMS
        | attention()
        | {"*.gate_up_proj.weight": rows(), "*.down_proj.weight": rows(), "*bias": element()},
    ),
    Case(
        # Llama 4 text: chunked local attention and NoPE layers (no_rope_layers), complex rotary,
        # L2 qk-norm without weights, temperature tuning; layer 1 MoE with experts stored
        # (E, D, 2 * FF) / (E, FF, D) used through torch.bmm (outputs along axis 2), sigmoid
        # router, shared expert
        "hf-llama4-chunked-attention-bmm-experts",
        "transformers",
        built(
            lambda: tf.Llama4ForCausalLM(
                tf.Llama4TextConfig(
                    **decoder(head_dim=HD, intermediate_size=16),
                    intermediate_size_mlp=FF,
                    num_local_experts=4,
                    num_experts_per_tok=1,
                    interleave_moe_layer_step=2,
                    no_rope_layers=[1, 0],
                    attention_chunk_size=4,
                    pad_token_id=0,
                )
            ),
            token_ids(V),
        ),
        HEAD
        | NORMS
        | GATED_MLP
        | attention()
        | {
            "*.experts.gate_up_proj": experts(axis=2),
            "*.experts.down_proj": experts(axis=2),
            "*.feed_forward.router.weight": rows(),
        },
    ),
    Case(
        # Qwen3.5 Gated DeltaNet: in_proj_qkv = q (2 key heads) | k (2 key heads) | v (4 value
        # heads), concatenated, through the depthwise causal Conv1d, then split and viewed per
        # head; separate in_proj_z / in_proj_b / in_proj_a; layer 1 gated softmax attention
        # (q_proj per head: query | gate); dense MLP
        "hf-qwen3-5-gated-deltanet-conv-qkv",
        "transformers",
        built(
            lambda: tf.Qwen3_5ForCausalLM(
                tf.Qwen3_5TextConfig(
                    **decoder(head_dim=HD),
                    linear_num_value_heads=4,
                    linear_num_key_heads=2,
                    linear_key_head_dim=8,
                    linear_value_head_dim=8,
                    linear_conv_kernel_dim=3,
                    layer_types=["linear_attention", "full_attention"],
                )
            ),
            token_ids(V),
        ),
        {
            "*.self_attn.q_proj.weight": segments(one(HD), per_row(HD), repeat=H),
            "*.in_proj_qkv.weight": segments(per_head(2, 8), per_head(2, 8), per_row(32)),
            "*.in_proj_?.weight": rows(),
            "*.linear_attn.conv1d.weight": whole(),
            "*.linear_attn.A_log": whole(),
            "*.linear_attn.dt_bias": element(),
            "*.linear_attn.out_proj.weight": rows(),
        }
        | HEAD
        | NORMS
        | GATED_MLP
        | {k: v for k, v in attention().items() if k != "*.q_proj.weight"},
        may_warn=("*.A_log",),
    ),
]
