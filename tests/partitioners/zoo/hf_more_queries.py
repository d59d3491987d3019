"""More Hugging Face encoders (transformers 5.x): learned query sets, latent arrays, windowed and
chunked attention with relative positions.

A set of learned query tokens (a latent array, BLIP-2's query tokens, a register) is one block
per tensor, like a class token. Every layout below is read from
``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import transformers as tf

from .blocks import element, heads, per_head, per_row, rows, segments, whole
from .case import Built, Case, seeded, token_ids

V, D, H, HD, FF = 64, 32, 4, 8, 64
LAYERS = 2


def built(make: Callable[[], torch.nn.Module], *args: Any, **kwargs: Any) -> Callable[[], Built]:
    return lambda: Built(seeded(make), args, kwargs)


def pixels(size: int = 16) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))


FUSED_QKV = segments(per_head(H, HD), per_head(H, HD), per_row(D))  # reshape(B, T, 3, H, HD)

CASES = [
    Case(
        # Longformer: sliding-window attention on overlapping chunks made with as_strided,
        # scores by einsum("bcxd,bcyd->bcxy"), diagonal reshuffling, softmax, chunked value
        # einsum; separate query_global/key_global/value_global projections for global tokens
        # (the first token here); tied MLM decoder
        "hf-longformer-sliding-chunks-global",
        "transformers",
        built(
            lambda: tf.LongformerForMaskedLM(
                tf.LongformerConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    vocab_size=V,
                    max_position_embeddings=40,
                    attention_window=[4, 4],
                    pad_token_id=1,
                )
            ),
            token_ids(V),
            global_attention_mask=(torch.arange(8) == 0).long().expand(2, 8).clone(),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.token_type_embeddings.weight": rows(),
            "*.self.query*.weight": heads(HD),
            "*.self.key*.weight": heads(HD),
            "*.self.value*.weight": rows(),
            "*.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*layer_norm.weight": whole(),
            "*bias": element(),
        },
        miss="trace fails: export guards on is_global_attn = mask.any().item() (data-dependent), fx fails on .item(); submodule re-trace of lm_head gets a (1, 8) stand-in input: structure fallback, q/k heads lost, warned",
    ),
    Case(
        # ViTDet: absolute positions (1, 1 + 16, D) with the class row dropped ([:, 1:]) and the
        # rest viewed as a grid; windowed (layer 0) and global (layer 1) attention with fused
        # qkv reshape(B, T, 3, H, HD); decomposed relative positions: rel_pos_h/w tables read by
        # index and contracted with the queries (einsum "bhwc,hkc->bhwk"), one block per row;
        # a residual bottleneck of convs + channels-first LayerNorms
        "hf-vitdet-decomposed-rel-pos",
        "transformers",
        built(
            lambda: tf.VitDetModel(
                tf.VitDetConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    mlp_ratio=2,
                    image_size=16,
                    pretrain_image_size=16,
                    patch_size=4,
                    use_relative_position_embeddings=True,
                    window_size=2,
                    window_block_indices=[0],
                    residual_block_indices=[1],
                    out_features=["stage2"],
                )
            ),
            pixels(),
        ),
        {
            "embeddings.position_embeddings": rows(1),
            "embeddings.projection.weight": whole(),
            "*.attention.rel_pos_?": rows(),
            "*.attention.qkv.weight": FUSED_QKV,
            "*.attention.proj.weight": rows(),
            "*.mlp.fc?.weight": rows(),
            "*.residual.conv?.weight": whole(),
            "*norm*.weight": whole(),
            "*.bias": element(),
        },
        miss="SILENT: decomposed relative positions (scores viewed (B*H, qh, qw, kh, kw), + rel_h + rel_w, viewed back before softmax) lose the key side: fused qkv's k part per row, not per head (read without rel-pos); position table sliced [:, 1:] and viewed as a (1, 4, 4, D) grid before the add -> other, warned",
    ),
    Case(
        # Perceiver IO (MLM): a learned latent array (4, D) expanded over the batch is the query
        # of a cross-attention to the byte embeddings (+ learned positions); latent
        # self-attention (4 heads of 8); a decoder whose queries are a trainable position table
        # (16, D) (one block per position) attending with 8 heads of 32; logits against the
        # transposed embedding table
        "hf-perceiver-latent-array",
        "transformers",
        built(
            lambda: tf.PerceiverForMaskedLM(
                tf.PerceiverConfig(
                    num_latents=4,
                    d_latents=D,
                    d_model=D,
                    num_blocks=1,
                    num_self_attends_per_block=1,
                    num_self_attention_heads=H,
                    num_cross_attention_heads=1,
                    vocab_size=V,
                    max_position_embeddings=16,
                    qk_channels=D,
                    v_channels=D,
                )
            ),
            token_ids(V, seq=16),
        ),
        {
            "*.input_preprocessor.embeddings.weight": rows(),
            "*.input_preprocessor.position_embeddings.weight": rows(),
            "perceiver.embeddings.latents": whole(),
            "*.output_position_encodings.position_embeddings": rows(),
            "*.encoder.cross_attention.*.self.query.weight": heads(D),
            "*.encoder.cross_attention.*.self.key.weight": heads(D),
            "*.self_attends.*.self.query.weight": heads(HD),
            "*.self_attends.*.self.key.weight": heads(HD),
            "*.decoding_cross_attention.*.self.query.weight": heads(32),
            "*.decoding_cross_attention.*.self.key.weight": heads(32),
            "*.self.value.weight": rows(),
            "*.dense*.weight": rows(),
            "*layernorm*.weight": whole(),
            "*bias": element(),
        },
        miss="warned, layout right: the latent array (expanded, then LayerNorm, then the query Linear) not explained as a learned token set; the decoder's trainable position table used the same way (into a LayerNorm, as queries) -> other, warned",
    ),
    Case(
        # BLIP-2 vision + Q-Former: ViT with fused qkv reshape(B, T, 3, H, HD), class embedding and
        # a position table added in full; 4 learned query tokens (1, 4, D) run through Q-Former
        # self-attention and cross-attention to the image features; projection head
        "hf-blip2-qformer-query-tokens",
        "transformers",
        built(
            lambda: tf.Blip2VisionModelWithProjection(
                tf.Blip2Config(
                    vision_config=dict(
                        num_hidden_layers=1,
                        hidden_size=D,
                        num_attention_heads=H,
                        intermediate_size=FF,
                        image_size=16,
                        patch_size=4,
                    ),
                    qformer_config=dict(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        num_attention_heads=H,
                        intermediate_size=FF,
                        vocab_size=V,
                        encoder_hidden_size=D,
                        cross_attention_frequency=1,
                        max_position_embeddings=32,
                    ),
                    num_query_tokens=4,
                    image_text_hidden_size=16,
                )
            ),
            pixels(),
        ),
        {
            "query_tokens": whole(),
            "vision_model.embeddings.class_embedding": whole(),
            "vision_model.embeddings.position_embedding": rows(1),
            "vision_model.embeddings.patch_embedding.weight": whole(),
            "*.self_attn.qkv.weight": FUSED_QKV,
            "*.self_attn.projection.weight": rows(),
            "*.mlp.fc?.weight": rows(),
            "*attention.query.weight": heads(HD),
            "*attention.key.weight": heads(HD),
            "*attention.value.weight": rows(),
            "*.dense.weight": rows(),
            "vision_projection.weight": rows(),
            "*norm*.weight": whole(),
            "*LayerNorm.weight": whole(),
            "*bias": element(),
        },
        miss="warned, layout right: the learned query tokens (expanded, then LayerNorm, then attention) not explained as a learned token set",
    ),
]
