"""More Hugging Face encoders (transformers 5.x): learned query sets, latent arrays, windowed and
chunked attention, relative positions (Transformer-XL style, decomposed, continuous), resized
position tables.

A set of learned query tokens (a latent array, BLIP-2's query tokens, a register) is one block
per token, like an embedding row (a single class token: one block). Every layout below is read from
``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

import torch
import transformers as tf

from .blocks import element, heads, per_head, per_row, rows, segments, viewed, whole
from .case import Case, token_ids
from .hf_more import FF, HD, LABELS, LAYERS, D, H, V, built, pixels


def frozen_pos_conv(model: torch.nn.Module) -> torch.nn.Module:
    """The conformer builds wav2vec2's positional conv but never calls it: frozen, so that no
    parameter without a gradient is judged."""
    model.get_submodule("wav2vec2_conformer.encoder.pos_conv_embed").requires_grad_(False)
    return model


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
        miss="warned: sliding-window chunks made with as_strided, scored by einsum and reshuffled along diagonals are not read as attention (no site; the row flow stops at as_strided): query/key and query_global/key_global one block each, named in the warning, not per head",
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
    ),
    Case(
        # Perceiver IO (MLM): a learned latent array (4, D) expanded over the batch is the query
        # of a cross-attention to the byte embeddings (+ learned positions); latent
        # self-attention (4 heads of 8); a decoder whose queries are a trainable "position" array
        # (16, D), used exactly like the latents (expanded, LayerNorm, query Linear; never indexed
        # nor added: a learned token set, one block per token), attending with 8 heads of 32; logits
        # against the transposed embedding table
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
            "perceiver.embeddings.latents": rows(),  # learned tokens: one block per token
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
            "query_tokens": rows(1),  # learned tokens: one block per token
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
    ),
    Case(
        # wav2vec2-Conformer with relative positions: Transformer-XL style attention, linear_pos
        # projects the sinusoidal relative table into per-head position keys (one block per head),
        # pos_bias_u / pos_bias_v (H, HD) added to the (B, H, T, HD) query (biases: per element),
        # skew by pad + view; conv module: pointwise Conv1d, GLU, depthwise Conv1d, BatchNorm1d
        "hf-wav2vec2-conformer-rel-pos",
        "transformers",
        built(
            lambda: frozen_pos_conv(
                tf.Wav2Vec2ConformerForCTC(
                    tf.Wav2Vec2ConformerConfig(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        num_attention_heads=H,
                        intermediate_size=FF,
                        vocab_size=V,
                        conv_dim=(8, 8),
                        conv_stride=(5, 2),
                        conv_kernel=(10, 3),
                        num_conv_pos_embeddings=4,
                        num_conv_pos_embedding_groups=2,
                        mask_time_prob=0.0,
                        position_embeddings_type="relative",
                        conv_depthwise_kernel_size=3,
                    )
                )
            ),
            torch.randn(2, 400, generator=torch.Generator().manual_seed(0)),
        ),
        {
            "*.conv_layers.*.conv.weight": whole(),
            "*.conv_module.*conv*.weight": whole(),
            "*.feature_projection.projection.weight": rows(),
            "*.linear_q.weight": heads(HD),
            "*.linear_k.weight": heads(HD),
            "*.linear_pos.weight": heads(HD),
            "*.linear_v.weight": rows(),
            "*.linear_out.weight": rows(),
            "*.pos_bias_?": element(),
            "*_dense.weight": rows(),
            "lm_head.weight": rows(),
            "*norm.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # Swin V2: cosine attention (q, k L2-normalized per head) scaled by exp(clamp(logit_scale))
        # with logit_scale (H, 1, 1) (learned per-head scalars: one block); continuous position
        # bias: an MLP Linear(2, 512) -> ReLU -> Linear(512, H) on a fixed coordinates table,
        # gathered by index, 16 * sigmoid, added to the scores
        "hf-swinv2-cosine-attention-cpb-mlp",
        "transformers",
        built(
            lambda: tf.Swinv2ForImageClassification(
                tf.Swinv2Config(
                    image_size=16,
                    patch_size=4,
                    embed_dim=16,
                    depths=[1, 1],
                    num_heads=[2, 4],
                    window_size=2,
                    id2label=LABELS,
                )
            ),
            pixels(),
        ),
        {
            "*.patch_embeddings.projection.weight": whole(),
            "*.logit_scale": whole(),
            "*.continuous_position_bias_mlp.*.weight": rows(),
            "*.self.query.weight": heads(HD),
            "*.self.key.weight": heads(HD),
            "*.self.value.weight": rows(),
            "*.dense.weight": rows(),
            "*.downsample.reduction.weight": rows(),
            "*norm*.weight": whole(),
            "classifier.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # ConvNeXt V2: Global Response Normalization with (1, 1, 1, C) gamma (multiplied: one
        # block) and beta (added: per element)
        "hf-convnextv2-grn",
        "transformers",
        built(
            lambda: tf.ConvNextV2ForImageClassification(
                tf.ConvNextV2Config(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], id2label=LABELS)
            ),
            pixels(32),
        ),
        {
            "*.patch_embeddings.weight": whole(),
            "*.dwconv.weight": whole(),
            "*.downsampling_layer.1.weight": whole(),
            "*.downsampling_layer.0.weight": whole(),
            "*.grn.weight": whole(),
            "*.pwconv?.weight": rows(),
            "*layernorm.weight": whole(),
            "classifier.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # SigLIP 2 (NaFlex) vision: patches given flattened (Linear patch embedding); the (16, D)
        # position table viewed as a 4x4 grid and resized to each image's spatial shape by
        # bilinear weights computed from spatial_shapes: weights (B, L, 16) @ table, so the
        # table's rows are the contraction axis (one block per position row); attention-pool head
        "hf-siglip2-naflex-resized-positions",
        "transformers",
        built(
            lambda: tf.Siglip2VisionModel(
                tf.Siglip2VisionConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    num_patches=16,
                    patch_size=4,
                    num_channels=3,
                )
            ),
            torch.randn(2, 16, 48, generator=torch.Generator().manual_seed(0)),
            pixel_attention_mask=torch.tensor([[1] * 16, [1] * 12 + [0] * 4]),
            spatial_shapes=torch.tensor([[4, 4], [3, 4]]),
        ),
        {
            "embeddings.patch_embedding.weight": rows(),
            "embeddings.position_embedding.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*.fc?.weight": rows(),
            "head.probe": whole(),
            "head.attention.in_proj_weight": FUSED_QKV,
            "*norm*.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # Wav2Vec2-BERT (Conformer) with relative_key positions: a distance table (L + R + 1, HD)
        # looked up by the clamped distance matrix and contracted with the query heads
        # (einsum "bhld,lrd->bhlr", added to the scores): one block per distance row; conv module
        # with a depthwise LayerNorm; features given as (B, T, 16)
        "hf-wav2vec2-bert-relative-key",
        "transformers",
        built(
            lambda: tf.Wav2Vec2BertForCTC(
                tf.Wav2Vec2BertConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    vocab_size=V,
                    feature_projection_input_dim=16,
                    position_embeddings_type="relative_key",
                    left_max_position_embeddings=4,
                    right_max_position_embeddings=2,
                    conv_depthwise_kernel_size=3,
                    mask_time_prob=0.0,
                    add_adapter=False,
                )
            ),
            torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(0)),
        ),
        {
            "*.distance_embedding.weight": rows(),
            "*.conv_module.*conv*.weight": whole(),
            "*.feature_projection.projection.weight": rows(),
            "*.linear_q.weight": heads(HD),
            "*.linear_k.weight": heads(HD),
            "*.linear_v.weight": rows(),
            "*.linear_out.weight": rows(),
            "*_dense.weight": rows(),
            "lm_head.weight": rows(),
            "*norm.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # Qwen2-VL vision tower (as in Qwen2/2.5-VL): Conv3d patch embedding over flattened
        # patches, fused qkv reshape(T, 3, H, HD).permute(1, 0, 2, 3).unbind(0), 2-D rotary,
        # attention per image from cu_seqlens (grid_thw), PatchMerger (LayerNorm, 2x2 merge,
        # MLP)
        "hf-qwen2-vl-vision-tower",
        "transformers",
        built(
            lambda: tf.models.qwen2_vl.modeling_qwen2_vl.Qwen2VisionTransformerPretrainedModel(
                tf.Qwen2VLVisionConfig(
                    depth=LAYERS,
                    embed_dim=D,
                    hidden_size=D,
                    num_heads=H,
                    mlp_ratio=2,
                    patch_size=2,
                    temporal_patch_size=2,
                    spatial_merge_size=2,
                    in_channels=3,
                )
            ),
            torch.randn(32, 24, generator=torch.Generator().manual_seed(0)),
            grid_thw=torch.tensor([[1, 4, 4], [1, 4, 4]]),
        ),
        {
            "patch_embed.proj.weight": whole(),
            "*.attn.qkv.weight": FUSED_QKV,
            "*.attn.proj.weight": rows(),
            "*.fc?.weight": rows(),
            "merger.mlp.*.weight": rows(),
            "*norm*.weight": whole(),
            "merger.ln_q.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # Pixtral vision encoder: conv patches, RMSNorms, 2-D rotary (cos/sin per patch row and
        # column), block-diagonal mask per image from image_sizes, SwiGLU
        "hf-pixtral-vision-2d-rope",
        "transformers",
        built(
            lambda: tf.PixtralVisionModel(
                tf.PixtralVisionConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    image_size=16,
                    patch_size=4,
                )
            ),
            pixels(),
            image_sizes=torch.tensor([[16, 16], [16, 16]]),
        ),
        {
            "patch_conv.weight": whole(),
            "ln_pre.weight": whole(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.o_proj.weight": rows(),
            "*.feed_forward.*_proj.weight": rows(),
            "*norm.weight": whole(),
        },
    ),
    Case(
        # SAM image encoder: a (1, 4, 4, D) position grid added to the patch grid (one block per
        # position), windowed and global attention with fused qkv reshape(B, N, 3, H, HD) and
        # decomposed relative positions (rel_pos_h / rel_pos_w rows), conv + LayerNorm neck
        "hf-sam-vision-encoder",
        "transformers",
        built(
            lambda: tf.SamVisionModel(
                tf.SamVisionConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    mlp_dim=FF,
                    image_size=32,
                    patch_size=8,
                    output_channels=16,
                    window_size=2,
                    global_attn_indexes=[1],
                    use_rel_pos=True,
                )
            ),
            pixels(32),
        ),
        {
            "vision_encoder.pos_embed": viewed((16, D), rows()),
            "*.patch_embed.projection.weight": whole(),
            "*.attn.rel_pos_?": rows(),
            "*.attn.qkv.weight": FUSED_QKV,
            "*.attn.proj.weight": rows(),
            "*.mlp.lin?.weight": rows(),
            "*.neck.conv?.weight": whole(),
            "*norm*.weight": whole(),
            "*bias": element(),
        },
    ),
]
