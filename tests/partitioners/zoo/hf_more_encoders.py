"""More Hugging Face encoders (transformers 5.x): structures hf_others.py doesn't cover.

Disentangled and Transformer-XL style relative attention, attention as einsum over 3-D weights or
as kernel-1 convolutions, grouped linears, factorized and concatenated output heads, Fourier
mixing, vision models with batch norms, attention-bias tables and layer scales, a conv audio
encoder under weight norm. Every layout below is read from
``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

import torch
import transformers as tf

from .blocks import Blocks, element, experts, heads, one, per_head, per_row, rows, segments, viewed, whole
from .case import Case, token_ids
from .hf_more import FF, HD, LABELS, LAYERS, D, H, V, built, encoder, pixels, without
from .hf_others import bert_like


def bert_layers() -> dict[str, Blocks]:
    """hf_others' BERT layout without the MLM transform (not every model here has one)."""
    return without(bert_like(), {"*.transform.dense.weight"})


CASES = [
    Case(
        # DeBERTa-v2/v3 disentangled attention: query_proj/key_proj (heads merged into the batch
        # for bmm) are also applied to the relative-position table (share_att_key), c2p and p2c
        # scores gathered by relative position; rel_embeddings (2 * buckets, D) LayerNormed and
        # sliced [0 : 2 * span]: one block per position row; tied MLM head
        "hf-deberta-v2-disentangled",
        "transformers",
        built(
            lambda: tf.DebertaV2ForMaskedLM(
                tf.DebertaV2Config(
                    **encoder(),
                    relative_attention=True,
                    position_buckets=8,  # pyright: ignore[reportCallIssue] (read by getattr)
                    pos_att_type=["p2c", "c2p"],
                    norm_rel_ebd="layer_norm",  # pyright: ignore[reportCallIssue] (read by getattr)
                    share_att_key=True,  # pyright: ignore[reportCallIssue] (read by getattr)
                    position_biased_input=False,
                )
            ),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.rel_embeddings.weight": rows(),
            "*.query_proj.weight": heads(HD),
            "*.key_proj.weight": heads(HD),
            "*.value_proj.weight": rows(),
            "*.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # DeBERTa-v2 without shared keys: separate pos_key_proj (c2p) and pos_query_proj (p2c)
        # project the relative-position table into key and query heads
        "hf-deberta-v2-pos-projections",
        "transformers",
        built(
            lambda: tf.DebertaV2ForMaskedLM(
                tf.DebertaV2Config(
                    **encoder(),
                    relative_attention=True,
                    position_buckets=8,  # pyright: ignore[reportCallIssue] (read by getattr)
                    pos_att_type=["p2c", "c2p"],
                    share_att_key=False,  # pyright: ignore[reportCallIssue] (read by getattr)
                    position_biased_input=True,
                )
            ),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.rel_embeddings.weight": rows(),
            "*.query_proj.weight": heads(HD),
            "*.key_proj.weight": heads(HD),
            "*.pos_query_proj.weight": heads(HD),
            "*.pos_key_proj.weight": heads(HD),
            "*.value_proj.weight": rows(),
            "*.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # ALBERT: factorized embeddings (E=16) mapped to D by embedding_hidden_mapping_in, ONE
        # layer's weights shared by both layers; MLM head dense (D -> E), decoder tied to the
        # word embeddings
        "hf-albert-shared-layers",
        "transformers",
        built(lambda: tf.AlbertForMaskedLM(tf.AlbertConfig(**encoder(embedding_size=16))), token_ids(V)),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.token_type_embeddings.weight": rows(),
            "*.embedding_hidden_mapping_in.weight": rows(),
            "*.attention.query.weight": heads(HD),
            "*.attention.key.weight": heads(HD),
            "*.attention.value.weight": rows(),
            "*.attention.dense.weight": rows(),
            "*.ffn.weight": rows(),
            "*.ffn_output.weight": rows(),
            "predictions.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*layer_norm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # ELECTRA discriminator: embeddings of 16 projected to D (embeddings_project), BERT
        # layers, a (1, D) token classifier
        "hf-electra-discriminator",
        "transformers",
        built(lambda: tf.ElectraForPreTraining(tf.ElectraConfig(**encoder(embedding_size=16))), token_ids(V)),
        bert_layers()
        | {
            "*.embeddings_project.weight": rows(),
            "discriminator_predictions.dense.weight": rows(),
            "discriminator_predictions.dense_prediction.weight": rows(),
        },
    ),
    Case(
        # RoBERTa: position ids computed from the input ids (cumsum of the non-pad mask +
        # padding_idx), then looked up; tied MLM decoder
        "hf-roberta-mlm",
        "transformers",
        built(
            lambda: tf.RobertaForMaskedLM(
                tf.RobertaConfig(**encoder(max_position_embeddings=40, pad_token_id=1))
            ),
            token_ids(V),
        ),
        bert_layers() | {"lm_head.dense.weight": rows(), "lm_head.layer_norm.weight": whole()},
    ),
    Case(
        # MPNet: relative position bucket table (32 buckets, H) read by bucket id and added to the
        # scores (one block per row); attn.q/k/v/o; tied MLM decoder
        "hf-mpnet-relative-buckets",
        "transformers",
        built(
            lambda: tf.MPNetForMaskedLM(tf.MPNetConfig(**encoder(max_position_embeddings=40))),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.relative_attention_bias.weight": rows(),
            "*.attn.q.weight": heads(HD),
            "*.attn.k.weight": heads(HD),
            "*.attn.v.weight": rows(),
            "*.attn.o.weight": rows(),
            "*.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*layer_norm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # Funnel: relative-shift attention as einsums over (B, T, H, HD); r_kernel (D, H, HD)
        # projects the sinusoidal positions into per-head keys (one block per head: axis 1);
        # seg_embed (2, H, HD) are per-head keys of the two segment types (one block per
        # (segment, head)); r_w/r_r/r_s biases (H, HD) added to the query (per element); mean
        # pooling between blocks, upsampling decoder; tied head
        "hf-funnel-relative-einsum",
        "transformers",
        built(
            lambda: tf.FunnelForMaskedLM(
                tf.FunnelConfig(
                    block_sizes=[1, 1],
                    num_decoder_layers=1,
                    d_model=D,
                    n_head=H,
                    d_head=HD,
                    d_inner=FF,
                    vocab_size=V,
                )
            ),
            token_ids(V),
            token_type_ids=(torch.arange(16).reshape(2, 8) >= 5).long(),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.q_head.weight": heads(HD),
            "*.k_head.weight": heads(HD),
            "*.v_head.weight": rows(),
            "*.post_proj.weight": rows(),
            "*.r_kernel": rows(1),
            "*.seg_embed": viewed((2 * H, HD), rows()),
            "*.r_?_bias": element(),
            "*.linear_?.weight": rows(),
            "*layer_norm.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # XLNet two-stream relative attention as einsums with 3-D weights (D, H, HD): q, k, r
        # (position keys) one block per head (axis 1), v per output neuron (head, dim), o
        # ("ibnd,hnd->ibh") per output neuron along axis 0; seg_embed (2, H, HD) per (segment,
        # head); mask_emb (1, 1, D) a learned query-stream token (one block); tied head
        "hf-xlnet-two-stream-einsum",
        "transformers",
        built(
            lambda: tf.XLNetLMHeadModel(
                tf.XLNetConfig(n_layer=LAYERS, d_model=D, n_head=H, d_inner=FF, vocab_size=V)
            ),
            token_ids(V),
            token_type_ids=(torch.arange(16).reshape(2, 8) >= 5).long(),
            perm_mask=torch.triu(torch.ones(8, 8), diagonal=1).expand(2, 8, 8).clone(),
            target_mapping=torch.eye(8)[-2:].expand(2, 2, 8).clone(),
        ),
        {
            "transformer.mask_emb": whole(),
            "transformer.word_embedding.weight": rows(),
            "*.rel_attn.q": rows(1),
            "*.rel_attn.k": rows(1),
            "*.rel_attn.r": rows(1),
            "*.rel_attn.v": viewed((D, H * HD), rows(1)),
            "*.rel_attn.o": rows(0),
            "*.rel_attn.seg_embed": viewed((2 * H, HD), rows()),
            "*.rel_attn.r_?_bias": element(),
            "*.layer_?.weight": rows(),
            "*layer_norm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # ConvBERT mixed attention: H/head_ratio = 2 self-attention heads of 8 plus a span-based
        # dynamic convolution (depthwise + pointwise Conv1d on the keys, its kernel predicted by
        # conv_kernel_layer from key_conv * query, applied to unfolded conv_out_layer rows);
        # GroupedLinearLayer FFN weights (G, in/G, out/G) used as x @ W[g]: one block per
        # (group, output neuron) along axis 2
        "hf-convbert-span-dynamic-conv",
        "transformers",
        built(
            lambda: tf.ConvBertForMaskedLM(
                tf.ConvBertConfig(**encoder(embedding_size=D, head_ratio=2, conv_kernel_size=3, num_groups=2))
            ),
            token_ids(V),
        ),
        bert_layers()
        | {
            "*.key_conv_attn_layer.*.weight": whole(),
            "*.conv_kernel_layer.weight": rows(),
            "*.conv_out_layer.weight": rows(),
            "*.intermediate.dense.weight": experts(axis=2),
            "*.output.dense.weight": experts(axis=2),
            "generator_predictions.dense.weight": rows(),
        },
    ),
    Case(
        # SqueezeBERT: attention in NCW layout with kernel-1 grouped Conv1d q/k/v; the query
        # and key convs feed the attention heads (one block per head of 8 output channels);
        # the other convs (value, post-attention, FFN) are convolutions: one block per tensor;
        # the pooler is computed but unused by the MLM output
        "hf-squeezebert-conv1d-attention",
        "transformers",
        built(
            lambda: tf.SqueezeBertForMaskedLM(
                tf.SqueezeBertConfig(
                    **encoder(embedding_size=D),
                    q_groups=2,
                    k_groups=2,
                    v_groups=2,
                    post_attention_groups=2,
                    intermediate_groups=4,
                    output_groups=4,
                )
            ),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.token_type_embeddings.weight": rows(),
            "*.attention.query.weight": heads(HD),
            "*.attention.key.weight": heads(HD),
            "*.attention.value.weight": whole(),
            "*.conv1d.weight": whole(),
            "*.pooler.dense.weight": rows(),
            "*.transform.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*layernorm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # MobileBERT: trigram embedding (three shifted copies concatenated, then a Linear(3E, D)),
        # bottlenecks (D -> 16) feeding shared query/key (heads of 4), value from the full width,
        # NoNorm (x * w + b, one block per scale), stacked FFNs; the MLM head multiplies by
        # cat([decoder.weight.T, dense.weight]): the tied (V, E) table and dense.weight (D - E, V)
        # both one block per token (dense along axis 1)
        "hf-mobilebert-bottleneck-trigram",
        "transformers",
        built(
            lambda: tf.MobileBertForMaskedLM(
                tf.MobileBertConfig(
                    **encoder(embedding_size=16),
                    intra_bottleneck_size=16,
                    num_feedforward_networks=2,
                )
            ),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.token_type_embeddings.weight": rows(),
            "*.embedding_transformation.weight": rows(),
            "*.self.query.weight": heads(4),
            "*.self.key.weight": heads(4),
            "*.self.value.weight": rows(),
            "cls.predictions.dense.weight": rows(1),
            "*.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # RoFormer: frozen sinusoidal table, rotary (rotate_every_two) applied to queries, keys
        # AND values (rotary_value=True); BERT-style layers; tied MLM decoder
        "hf-roformer-rotary-value",
        "transformers",
        built(
            lambda: tf.RoFormerForMaskedLM(tf.RoFormerConfig(**encoder(embedding_size=D, rotary_value=True))),
            token_ids(V),
        ),
        without(bert_layers(), {"*.position_embeddings.weight"}) | {"*.transform.dense.weight": rows()},
    ),
    Case(
        # Nystromformer: landmark attention (q/k segment means, three softmax kernels and an
        # iterative pseudo-inverse) per head; a depthwise Conv2d (H, 1, 3, 1) on the values
        "hf-nystromformer-landmarks",
        "transformers",
        built(
            lambda: tf.NystromformerForMaskedLM(
                tf.NystromformerConfig(
                    **encoder(max_position_embeddings=40),
                    segment_means_seq_len=8,
                    num_landmarks=4,
                    conv_kernel_size=3,
                )
            ),
            token_ids(V),
        ),
        bert_layers() | {"*.self.conv.weight": whole(), "*.transform.dense.weight": rows()},
    ),
    Case(
        # FNet: token mixing by a 2-D FFT (no attention, no mixing weights), an embedding
        # projection; the pooler is computed but unused by the MLM output
        "hf-fnet-fourier",
        "transformers",
        built(
            lambda: tf.FNetForMaskedLM(tf.FNetConfig(**encoder(), use_tpu_fourier_optimizations=False)),
            token_ids(V),
        ),
        {
            "*.word_embeddings.weight": rows(),
            "*.position_embeddings.weight": rows(),
            "*.token_type_embeddings.weight": rows(),
            "*.projection.weight": rows(),
            "*.dense.weight": rows(),
            "*LayerNorm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # SigLIP vision tower with the attention-pooling head: a learned probe (1, 1, D) queries
        # the tokens through nn.MultiheadAttention, whose fused in_proj_weight is q | k | v
        "hf-siglip-vision-attention-pool",
        "transformers",
        built(
            lambda: tf.SiglipVisionModel(
                tf.SiglipVisionConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    image_size=16,
                    patch_size=4,
                )
            ),
            pixels(),
        ),
        {
            "embeddings.patch_embedding.weight": whole(),
            "embeddings.position_embedding.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*.fc?.weight": rows(),
            "head.probe": whole(),
            "head.attention.in_proj_weight": segments(per_head(H, HD), per_head(H, HD), per_row(D)),
            "*norm*.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # BEiT: per-layer relative position bias table ((2w-1)^2 + 3, H) read by index (one
        # block per row), LayerScale lambda_1/lambda_2 (one block), k_proj without bias, mean
        # pooling + LayerNorm, a class token
        "hf-beit-relative-bias-layerscale",
        "transformers",
        built(
            lambda: tf.BeitForImageClassification(
                tf.BeitConfig(
                    num_hidden_layers=LAYERS,
                    hidden_size=D,
                    num_attention_heads=H,
                    intermediate_size=FF,
                    image_size=16,
                    patch_size=4,
                    use_relative_position_bias=True,
                    use_mean_pooling=True,
                    layer_scale_init_value=0.1,
                    id2label=LABELS,
                )
            ),
            pixels(),
        ),
        {
            "beit.embeddings.cls_token": whole(),
            "*.patch_embeddings.projection.weight": whole(),
            "*.lambda_?": whole(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.o_proj.weight": rows(),
            "*.fc?.weight": rows(),
            "*.relative_position_bias_table": rows(),
            "*norm*.weight": whole(),
            "classifier.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # LeViT: conv + BatchNorm patch stem; Linear + BatchNorm1d layers; queries_keys_values
        # viewed (B, N, H, -1) and split per head into q (4) | k (4) | v (8); a subsampling
        # attention with keys_values split per head into k | v and queries from a strided
        # token subset; attention_biases (H, offsets) read by index along dim 1 (one block
        # per offset column)
        "hf-levit-batchnorm-attention-bias",
        "transformers",
        built(
            lambda: tf.LevitForImageClassification(
                tf.LevitConfig(
                    image_size=32,
                    patch_size=16,
                    hidden_sizes=[16, 32],
                    num_attention_heads=[2, 4],
                    depths=[1, 1],
                    key_dim=[4, 4],
                    drop_path_rate=0,
                    mlp_ratio=[2, 2],
                    attention_ratio=[2, 2],
                    down_ops=[["Subsample", 4, 2, 2, 2, 2]],  # pyright: ignore[reportCallIssue]
                    id2label=LABELS,
                )
            ),
            pixels(32),
        ),
        {
            "*.convolution.weight": whole(),
            "*.stages.0.*.queries_keys_values.linear.weight": segments(one(4), one(4), per_row(8), repeat=2),
            "*.stages.1.*.queries_keys_values.linear.weight": segments(one(4), one(4), per_row(8), repeat=4),
            "*.keys_values.linear.weight": segments(one(4), per_row(8), repeat=2),
            "*.queries.linear.weight": heads(4),
            "*.attention_biases": rows(1),
            "*.linear.weight": rows(),  # projection, linear_up/down, classifier
            "*batch_norm.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # SegFormer: overlapping conv patch embeddings, efficient attention whose keys/values
        # come from a spatially reduced sequence (strided Conv2d + LayerNorm), Mix-FFN with a
        # depthwise Conv2d between fc1 and fc2; all-MLP decode head with 1x1 convs + BatchNorm
        "hf-segformer-sequence-reduction",
        "transformers",
        built(
            lambda: tf.SegformerForSemanticSegmentation(
                tf.SegformerConfig(
                    num_encoder_blocks=2,
                    depths=[1, 1],
                    sr_ratios=[2, 1],
                    hidden_sizes=[8, 16],
                    patch_sizes=[7, 3],
                    strides=[4, 2],
                    num_attention_heads=[1, 2],
                    mlp_ratios=[2, 2],
                    decoder_hidden_size=16,
                    id2label={i: str(i) for i in range(3)},
                )
            ),
            pixels(32),
        ),
        {
            "*.patch_embeddings.proj.weight": whole(),
            "*.sequence_reduction.sequence_reduction.weight": whole(),
            "*.dwconv.weight": whole(),
            "decode_head.linear_fuse.weight": whole(),
            "decode_head.classifier.weight": whole(),
            "*.q_proj.weight": heads(8),
            "*.k_proj.weight": heads(8),
            "*.v_proj.weight": rows(),
            "*.o_proj.weight": rows(),
            "*.fc?.weight": rows(),
            "*.linear_projections.*.proj.weight": rows(),
            "*norm*.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # ConvNeXt: patchify conv, depthwise 7x7 conv, channels-last LayerNorm, pointwise
        # Linear MLP, layer-scale gamma (D,) multiplied; channels-first LayerNorm (weight[:, None,
        # None] * x + b) and a strided conv downsampling between stages
        "hf-convnext-layer-scale",
        "transformers",
        built(
            lambda: tf.ConvNextForImageClassification(
                tf.ConvNextConfig(num_stages=2, hidden_sizes=[8, 16], depths=[1, 1], id2label=LABELS)
            ),
            pixels(32),
        ),
        {
            "convnext.embeddings.patch_embeddings.weight": whole(),
            "*.dwconv.weight": whole(),
            "*.downsampling_layer.1.weight": whole(),
            "*.downsampling_layer.0.weight": whole(),  # channels-first LayerNorm scale
            "*.layer_scale_parameter": whole(),
            "*.pwconv?.weight": rows(),
            "*layernorm.weight": whole(),
            "classifier.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # wav2vec 2.0 CTC: conv feature encoder (GroupNorm on the first conv), feature
        # projection, a grouped positional Conv1d under weight_norm (parametrizations:
        # original0 = g (1, 1, K) magnitudes, original1 = v the direction: both one block), post-LN
        # attention layers, CTC head over the vocabulary
        "hf-wav2vec2-conv-encoder-weight-norm",
        "transformers",
        built(
            lambda: tf.Wav2Vec2ForCTC(
                tf.Wav2Vec2Config(
                    **encoder(),
                    conv_dim=(8, 8),
                    conv_stride=(5, 2),
                    conv_kernel=(10, 3),
                    num_conv_pos_embeddings=4,
                    num_conv_pos_embedding_groups=2,
                    mask_time_prob=0.0,
                )
            ),
            torch.randn(2, 400, generator=torch.Generator().manual_seed(0)),
        ),
        {
            "*.conv_layers.*.conv.weight": whole(),
            "*.pos_conv_embed.conv.parametrizations.weight.original?": whole(),
            "*.feature_projection.projection.weight": rows(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*_dense.weight": rows(),
            "lm_head.weight": rows(),
            "*layer_norm.weight": whole(),
            "*.bias": element(),
        },
    ),
]
