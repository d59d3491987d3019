"""Hugging Face encoders, encoder-decoders, vision and state-space models (transformers 5.x).

Every layout below is read from ``transformers/models/<model>/modeling_<model>.py``.
"""

from __future__ import annotations

import torch
import transformers as tf

from .blocks import Blocks, element, heads, one, per_head, per_row, rows, segments, whole
from .case import Built, Case, seeded, token_ids

V, D, H, HD, FF = 64, 32, 4, 8, 64
LAYERS = 2


def pixels(size: int = 16, channels: int = 3) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(0))


def bert_like() -> dict[str, Blocks]:
    """BertSelfAttention (separate query/key/value) + BertIntermediate/Output, post-LN."""
    return {
        "*.word_embeddings.weight": rows(),
        "*.position_embeddings.weight": rows(),
        "*.token_type_embeddings.weight": rows(),
        "*.self.query.weight": heads(HD),
        "*.self.key.weight": heads(HD),
        "*.self.value.weight": rows(),
        "*.attention.output.dense.weight": rows(),
        "*.intermediate.dense.weight": rows(),
        "*.output.dense.weight": rows(),
        "*.transform.dense.weight": rows(),  # MLM head transform
        "*LayerNorm.weight": whole(),
        "*bias": element(),  # incl. the MLM decoder bias
    }


def t5_attention() -> dict[str, Blocks]:
    """T5Attention: q/k/v/o without bias (inner dim H*HD), a relative-position bucket table."""
    return {
        "*.q.weight": heads(HD),
        "*.k.weight": heads(HD),
        "*.v.weight": rows(),
        "*.o.weight": rows(),
        "*.relative_attention_bias.weight": rows(),  # (buckets, H) looked up by bucket id
        "*layer_norm.weight": whole(),
    }


def bart_like(prefix: str = "model") -> dict[str, Blocks]:
    """BartAttention (self and cross), learned positions with offset 2, post-LN."""
    return {
        f"{prefix}.shared.weight": rows(),  # tied with both embed_tokens and lm_head
        "*.embed_positions.weight": rows(),
        "*.q_proj.weight": heads(HD),
        "*.k_proj.weight": heads(HD),
        "*.v_proj.weight": rows(),
        "*.out_proj.weight": rows(),
        "*.fc1.weight": rows(),
        "*.fc2.weight": rows(),
        "*layer_norm*.weight": whole(),
        "*.layernorm_embedding.weight": whole(),
        "*.bias": element(),
    }


def vit_layers() -> dict[str, Blocks]:
    """ViTAttention (q/k/v/o_proj) + ViTMLP (fc1, fc2), pre-LN."""
    return {
        "*.attention.q_proj.weight": heads(HD),
        "*.attention.k_proj.weight": heads(HD),
        "*.attention.v_proj.weight": rows(),
        "*.attention.o_proj.weight": rows(),
        "*.mlp.fc1.weight": rows(),
        "*.mlp.fc2.weight": rows(),
        "*layernorm*.weight": whole(),
        "*.bias": element(),
    }


CASES = [
    Case(
        "hf-bert-mlm",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.BertForMaskedLM(
                    tf.BertConfig(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        num_attention_heads=H,
                        intermediate_size=FF,
                        vocab_size=V,
                        max_position_embeddings=32,
                    )
                )
            ),
            (token_ids(V),),
        ),
        bert_like(),
    ),
    Case(
        # ModernBERT: Wqkv viewed (B, T, 3, H, HD) and unbound: q | k | v; Wi = input | gate
        # (chunk); bias-free LayerNorms; alternating global/local (sliding) attention; tied decoder
        "hf-modernbert-fused-wqkv",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.ModernBertForMaskedLM(
                    tf.ModernBertConfig(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        num_attention_heads=H,
                        intermediate_size=FF,
                        vocab_size=V,
                        max_position_embeddings=32,
                        local_attention=4,
                        layer_types=["full_attention", "sliding_attention"],
                        pad_token_id=0,
                        bos_token_id=1,
                        eos_token_id=2,
                        cls_token_id=1,
                        sep_token_id=2,
                    )
                )
            ),
            (token_ids(V),),
        ),
        {
            "*.tok_embeddings.weight": rows(),
            "*.Wqkv.weight": segments(per_head(H, HD), per_head(H, HD), per_row(D)),
            "*.attn.Wo.weight": rows(),
            "*.mlp.Wi.weight": rows(),
            "*.mlp.Wo.weight": rows(),
            "head.dense.weight": rows(),
            "*norm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # T5 (v1.1 gated FFN): encoder self-attention, decoder self- and cross-attention
        "hf-t5-encoder-decoder",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.T5ForConditionalGeneration(
                    tf.T5Config(
                        num_layers=LAYERS,
                        d_model=D,
                        d_kv=HD,
                        num_heads=H,
                        d_ff=FF,
                        vocab_size=V,
                        feed_forward_proj="gated-gelu",
                    )
                )
            ),
            (token_ids(V),),
            {"decoder_input_ids": token_ids(V, seq=5)},
        ),
        t5_attention()
        | {
            "shared.weight": rows(),  # tied with both embed_tokens and lm_head
            "*.wi_0.weight": rows(),
            "*.wi_1.weight": rows(),
            "*.wo.weight": rows(),
        },
    ),
    Case(
        # BART: encoder-decoder with cross-attention; head tied to the shared embedding
        "hf-bart-encoder-decoder",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.BartForConditionalGeneration(
                    tf.BartConfig(
                        encoder_layers=LAYERS,
                        decoder_layers=LAYERS,
                        d_model=D,
                        encoder_attention_heads=H,
                        decoder_attention_heads=H,
                        encoder_ffn_dim=FF,
                        decoder_ffn_dim=FF,
                        vocab_size=V,
                        max_position_embeddings=32,
                    )
                )
            ),
            (token_ids(V),),
            {"decoder_input_ids": token_ids(V, seq=5)},
        ),
        bart_like(),
    ),
    Case(
        # Whisper: two Conv1d front-end layers (one block per conv tensor), frozen sinusoidal
        # encoder positions, decoder positions read as a slice weight[0:T] and added, k_proj
        # without bias, cross-attention; output head tied to the decoder embedding
        "hf-whisper-encoder-decoder",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.WhisperForConditionalGeneration(
                    tf.WhisperConfig(
                        encoder_layers=LAYERS,
                        decoder_layers=LAYERS,
                        d_model=D,
                        encoder_attention_heads=H,
                        decoder_attention_heads=H,
                        encoder_ffn_dim=FF,
                        decoder_ffn_dim=FF,
                        vocab_size=V,
                        num_mel_bins=8,
                        max_source_positions=16,
                        max_target_positions=16,
                        pad_token_id=0,
                        bos_token_id=1,
                        eos_token_id=2,
                        decoder_start_token_id=1,
                        suppress_tokens=[],
                        begin_suppress_tokens=[],
                    )
                )
            ),
            (torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(0)),),
            {"decoder_input_ids": token_ids(V, seq=5)},
        ),
        {
            "*.conv*.weight": whole(),
            "model.decoder.embed_tokens.weight": rows(),
            "model.decoder.embed_positions.weight": rows(),
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
        # ViT: Conv2d patch embedding, a class token (1, 1, D) and a position table
        # (1, 1 + patches, D) added in full: one block per position row
        "hf-vit-classifier",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.ViTForImageClassification(
                    tf.ViTConfig(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        num_attention_heads=H,
                        intermediate_size=FF,
                        image_size=16,
                        patch_size=4,
                        id2label={i: str(i) for i in range(10)},
                    )
                )
            ),
            (pixels(),),
        ),
        vit_layers()
        | {
            "vit.embeddings.cls_token": whole(),  # class token: explained, one block
            "vit.embeddings.position_embeddings": rows(1),  # one block per position
            "*.patch_embeddings.projection.weight": whole(),  # conv: one block per tensor
            "classifier.weight": rows(),  # logits over classes
        },
    ),
    Case(
        # Swin (a timm-style hierarchical ViT): windowed attention with a relative position bias
        # table ((2w-1)^2, heads) read by index (one block per table row, like an embedding),
        # PatchMerging Linear(4C, 2C) between stages; head_dim 8 in both stages (C/heads)
        "hf-swin-relative-position-table",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.SwinForImageClassification(
                    tf.SwinConfig(
                        image_size=16,
                        patch_size=4,
                        embed_dim=16,
                        depths=[1, 1],
                        num_heads=[2, 4],
                        window_size=2,
                        id2label={i: str(i) for i in range(10)},
                    )
                )
            ),
            (pixels(),),
        ),
        {
            "*.patch_embeddings.projection.weight": whole(),
            "*.attention.q_proj.weight": heads(HD),
            "*.attention.k_proj.weight": heads(HD),
            "*.attention.v_proj.weight": rows(),
            "*.attention.o_proj.weight": rows(),
            "*.relative_position_bias_table": rows(),
            "*.mlp.fc1.weight": rows(),
            "*.mlp.fc2.weight": rows(),
            "*.downsample.reduction.weight": rows(),
            "*norm*.weight": whole(),
            "classifier.weight": rows(),
            "*.bias": element(),
        },
    ),
    Case(
        # DINOv2: class token, mask token (used: bool_masked_pos given), a position table
        # (1, 1 + N, D) bicubic-interpolated to the grid when traced (one block per position row),
        # LayerScale lambda1 (D,) multiplied (one block)
        "hf-dinov2-layerscale",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.Dinov2Model(
                    tf.Dinov2Config(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        num_attention_heads=H,
                        image_size=16,
                        patch_size=4,
                    )
                )
            ),
            (pixels(),),
            {"bool_masked_pos": torch.arange(32).reshape(2, 16) % 3 == 0},
        ),
        {
            "embeddings.cls_token": whole(),
            "embeddings.mask_token": whole(),
            "embeddings.position_embeddings": rows(1),
            "*.patch_embeddings.projection.weight": whole(),
            "*.attention.q_proj.weight": heads(HD),
            "*.attention.k_proj.weight": heads(HD),
            "*.attention.v_proj.weight": rows(),
            "*.attention.o_proj.weight": rows(),
            "*.mlp.fc1.weight": rows(),
            "*.mlp.fc2.weight": rows(),
            "*.lambda1": whole(),
            "*norm*.weight": whole(),
            "*.bias": element(),
        },
    ),
    Case(
        # CLIP: text tower (token + position embeddings, causal), vision tower (class embedding,
        # conv patches, position embedding), two projections and the learned logit scale
        "hf-clip-dual-encoder",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.CLIPModel(
                    tf.CLIPConfig(
                        text_config=dict(
                            num_hidden_layers=LAYERS,
                            hidden_size=D,
                            num_attention_heads=H,
                            intermediate_size=FF,
                            vocab_size=V,
                            max_position_embeddings=16,
                            projection_dim=16,
                        ),
                        vision_config=dict(
                            num_hidden_layers=LAYERS,
                            hidden_size=D,
                            num_attention_heads=H,
                            intermediate_size=FF,
                            image_size=16,
                            patch_size=4,
                            projection_dim=16,
                        ),
                        projection_dim=16,
                    )
                )
            ),
            (),
            {"input_ids": token_ids(V), "pixel_values": pixels()},
        ),
        {
            "*.token_embedding.weight": rows(),
            "*.position_embedding.weight": rows(),
            "vision_model.embeddings.class_embedding": whole(),
            "*.patch_embedding.weight": whole(),
            "*.q_proj.weight": heads(HD),
            "*.k_proj.weight": heads(HD),
            "*.v_proj.weight": rows(),
            "*.out_proj.weight": rows(),
            "*.fc1.weight": rows(),
            "*.fc2.weight": rows(),
            "*norm*.weight": whole(),  # layer_norm1/2, final_, pre_layrnorm, post_layernorm
            "*_projection.weight": rows(),
            "logit_scale": whole(),  # learned scalar
            "*.bias": element(),
        },
    ),
    Case(
        # Mamba (CPU path, no CUDA kernels): in_proj = x | z (chunk), depthwise Conv1d, x_proj =
        # dt | B | C, dt_proj; A_log (I, N) enters only through -exp(A_log) in the scan: not a
        # row of the partition principle's table: one block, a warning allowed; D is a 1-D scale
        "hf-mamba-ssm",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.MambaForCausalLM(
                    tf.MambaConfig(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        state_size=4,
                        expand=2,
                        conv_kernel=3,
                        vocab_size=V,
                        time_step_rank=4,
                        use_mambapy=False,
                    )
                )
            ),
            (token_ids(V),),
        ),
        {
            "backbone.embeddings.weight": rows(),
            "*.in_proj.weight": rows(),
            "*.conv1d.weight": whole(),
            "*.x_proj.weight": rows(),
            "*.dt_proj.weight": rows(),
            "*.A_log": whole(),
            "*.mixer.D": whole(),
            "*.out_proj.weight": rows(),
            "*norm*.weight": whole(),
            "*.bias": element(),
        },
        may_warn=("*.A_log",),
    ),
    Case(
        # Switch Transformers: T5 attention, every second layer sparse with a router
        # (classifier Linear(D, E)) and per-expert nn.Linear experts (wi, wo) in a ModuleDict
        "hf-switch-per-expert-linear",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.SwitchTransformersForConditionalGeneration(
                    tf.SwitchTransformersConfig(
                        num_layers=LAYERS,
                        num_decoder_layers=LAYERS,
                        num_sparse_encoder_layers=1,
                        num_sparse_decoder_layers=1,
                        d_model=D,
                        d_kv=HD,
                        num_heads=H,
                        d_ff=FF,
                        vocab_size=V,
                        num_experts=4,
                        expert_capacity=8,
                    )
                )
            ),
            (token_ids(V),),
            {"decoder_input_ids": token_ids(V, seq=5)},
        ),
        t5_attention()
        | {
            "shared.weight": rows(),
            "*.wi.weight": rows(),  # dense FFN and each expert's nn.Linear
            "*.wo.weight": rows(),
            "*.router.classifier.weight": rows(),
        },
    ),
    Case(
        # DistilBERT: q_lin/k_lin/v_lin/out_lin, learned positions, no token types
        "hf-distilbert",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.DistilBertForMaskedLM(
                    tf.DistilBertConfig(
                        n_layers=LAYERS,
                        dim=D,
                        n_heads=H,
                        hidden_dim=FF,
                        vocab_size=V,
                        max_position_embeddings=32,
                    )
                )
            ),
            (token_ids(V),),
        ),
        {
            "*.word_embeddings.weight": rows(),  # tied with vocab_projector
            "*.position_embeddings.weight": rows(),
            "*.q_lin.weight": heads(HD),
            "*.k_lin.weight": heads(HD),
            "*.v_lin.weight": rows(),
            "*.out_lin.weight": rows(),
            "*.lin1.weight": rows(),
            "*.lin2.weight": rows(),
            "vocab_transform.weight": rows(),
            "*layer_norm.weight": whole(),
            "*LayerNorm.weight": whole(),
            "*bias": element(),
        },
    ),
    Case(
        # Mamba-2 (torch path): in_proj = z | x | B | C | dt, depthwise Conv1d over x|B|C,
        # per-head A_log (H,) only through -exp(A_log) (one block, a warning allowed), D (H,)
        # a 1-D scale, dt_bias (H,) added to dt (a bias), gated RMSNorm. The chunked SSD is
        # linear attention (einsum C.B per head over the state, times the decay, then with x):
        # B and C are the key and query of one group shared by all heads, one block each
        "hf-mamba2-ssd",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.Mamba2ForCausalLM(
                    tf.Mamba2Config(
                        num_hidden_layers=LAYERS,
                        hidden_size=D,
                        state_size=8,
                        expand=2,
                        head_dim=8,
                        num_heads=8,
                        n_groups=1,
                        conv_kernel=3,
                        chunk_size=4,
                        vocab_size=V,
                    )
                )
            ),
            (token_ids(V),),
        ),
        {
            "backbone.embeddings.weight": rows(),
            "*.in_proj.weight": segments(per_row(2 * 64), one(8), one(8), per_row(8)),
            "*.conv1d.weight": whole(),
            "*.A_log": whole(),
            "*.mixer.D": whole(),
            "*.dt_bias": element(),
            "*.out_proj.weight": rows(),
            "*norm*.weight": whole(),
            "lm_head.weight": rows(),
            "*.bias": element(),
        },
        may_warn=("*.A_log",),
    ),
    Case(
        # NLLB-MoE: M2M-style encoder-decoder (sinusoidal positions, cross-attention) whose sparse
        # layers route tokens to per-expert nn.Linear FFNs (fc1, fc2) in a ModuleDict
        "hf-nllb-moe-per-expert-linear",
        "transformers",
        lambda: Built(
            seeded(
                lambda: tf.NllbMoeForConditionalGeneration(
                    tf.NllbMoeConfig(
                        encoder_layers=LAYERS,
                        decoder_layers=LAYERS,
                        d_model=D,
                        encoder_attention_heads=H,
                        decoder_attention_heads=H,
                        encoder_ffn_dim=FF,
                        decoder_ffn_dim=FF,
                        vocab_size=V,
                        max_position_embeddings=32,
                        num_experts=4,
                        expert_capacity=8,
                        encoder_sparse_step=2,
                        decoder_sparse_step=2,
                    )
                )
            ),
            (token_ids(V),),
            {"decoder_input_ids": token_ids(V, seq=5)},
        ),
        {
            k: v
            for k, v in bart_like().items()
            if k not in ("*.embed_positions.weight", "*.layernorm_embedding.weight")  # sinusoidal, none
        }
        | {"*.router.classifier.weight": rows()},
    ),
]
