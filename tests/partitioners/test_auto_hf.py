"""auto_partition on Hugging Face models from small random configs, used as they come."""

from __future__ import annotations

import warnings

import pytest
import torch
import transformers

from partitioners import BlockLayout, auto_partition, name_partition

ROWS0, ROWS1 = BlockLayout.rows(0), BlockLayout.rows(1)
NORM, BIAS = BlockLayout.tensor(), BlockLayout.element()
VOCAB, D, HEADS, HEAD = 128, 64, 4, 16


def ids(batch: int = 2, seq: int = 8) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(0))


def build(config) -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.AutoModelForCausalLM.from_config(config)


def plan_of(model, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # every parameter decided by the graph
        warnings.filterwarnings("ignore", message=".*(token_id|deprecated|TracerWarning).*")
        return auto_partition(model, args, kwargs)


def expect(plan, model, table: dict[str, tuple[str, BlockLayout]], method: str = "export") -> None:
    """Every trainable parameter: (role, layout) by the first pattern (a suffix) it ends with."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert list(plan) == names
    for name in names:
        suffix = next((s for s in table if name.endswith(s)), None)
        assert suffix is not None, f"no expectation for {name}"
        role, layout = table[suffix]
        entry = plan[name]
        assert (entry.role, entry.layout, entry.decided_by) == (role, layout, method), name


def test_gpt2_conv1d_fused_qkv_tied_head():
    cfg = transformers.GPT2Config(n_layer=2, n_embd=D, n_head=HEADS, vocab_size=VOCAB, n_positions=32)
    model = build(cfg)
    plan = plan_of(model, ids())
    qkv = BlockLayout.segmented([(D, HEAD, "q"), (D, HEAD, "k"), (D, 1, "v")], axis=1)
    expect(
        plan,
        model,
        {
            "wte.weight": ("embedding", ROWS0),  # tied with lm_head: one entry
            "wpe.weight": ("embedding", ROWS0),
            "c_attn.weight": ("qkv", qkv),
            "attn.c_proj.weight": ("attn_out", ROWS1),
            "c_fc.weight": ("linear", ROWS1),
            "mlp.c_proj.weight": ("linear", ROWS1),
            "ln_1.weight": ("norm", NORM),
            "ln_2.weight": ("norm", NORM),
            "ln_f.weight": ("norm", NORM),
            "bias": ("bias", BIAS),
        },
    )
    assert "lm_head.weight" not in plan
    # the name rules get GPT-2 wrong (Conv1D stores outputs on dim 1; c_attn is fused)
    names = name_partition(model, dim=D, n_heads=HEADS)
    assert (
        names["transformer.h.0.attn.c_attn.weight"].layout
        != plan["transformer.h.0.attn.c_attn.weight"].layout
    )
    assert (
        names["transformer.h.0.mlp.c_fc.weight"].layout
        == ROWS0
        != plan["transformer.h.0.mlp.c_fc.weight"].layout
    )


def llama_config(layers: int = 2, **kw):
    return transformers.LlamaConfig(
        num_hidden_layers=layers,
        hidden_size=D,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        **kw,
    )


LLAMA = {
    "embed_tokens.weight": ("embedding", ROWS0),
    "q_proj.weight": ("query", BlockLayout.rows(0, group=HEAD)),
    "k_proj.weight": ("key", BlockLayout.rows(0, group=HEAD)),  # 2 kv heads (GQA)
    "v_proj.weight": ("value", ROWS0),
    "o_proj.weight": ("attn_out", ROWS0),
    "gate_proj.weight": ("linear", ROWS0),
    "up_proj.weight": ("linear", ROWS0),
    "down_proj.weight": ("linear", ROWS0),
    "layernorm.weight": ("norm", NORM),
    "norm.weight": ("norm", NORM),
    "lm_head.weight": ("output", ROWS0),
}


def test_llama_gqa_matches_official_names():
    model = build(llama_config())
    plan = plan_of(model, ids())
    expect(plan, model, LLAMA)
    assert plan["model.layers.0.self_attn.k_proj.weight"].num_blocks == 2
    names = name_partition(model, dim=D, n_heads=HEADS, n_kv_heads=2)
    assert {n: e.layout for n, e in plan.items()} == {n: e.layout for n, e in names.items()}


def test_llama_collapsed_layers_equal_full_trace():
    model = build(llama_config(layers=4))
    assert plan_of(model, ids()) == auto_partition(model, (ids(),), collapse_repeats=False)


def test_llama_head_dim_times_heads_differs_from_hidden():
    model = build(llama_config(head_dim=8))  # 4 heads x 8 = 32 != 64
    plan = plan_of(model, ids())
    assert plan["model.layers.0.self_attn.q_proj.weight"].layout == BlockLayout.rows(0, group=8)
    assert plan["model.layers.0.self_attn.k_proj.weight"].layout == BlockLayout.rows(0, group=8)
    assert plan["model.layers.0.self_attn.o_proj.weight"].layout == ROWS0


def test_bert_masked_lm():
    cfg = transformers.BertConfig(
        num_hidden_layers=2, hidden_size=D, num_attention_heads=HEADS, intermediate_size=128, vocab_size=VOCAB
    )
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(cfg)
    plan = plan_of(model, ids())
    expect(
        plan,
        model,
        {
            "embeddings.word_embeddings.weight": ("embedding", ROWS0),  # tied with the decoder
            "embeddings.position_embeddings.weight": ("embedding", ROWS0),
            "embeddings.token_type_embeddings.weight": ("embedding", ROWS0),
            "self.query.weight": ("query", BlockLayout.rows(0, group=HEAD)),
            "self.key.weight": ("key", BlockLayout.rows(0, group=HEAD)),
            "self.value.weight": ("value", ROWS0),
            "attention.output.dense.weight": ("attn_out", ROWS0),
            "intermediate.dense.weight": ("linear", ROWS0),
            "output.dense.weight": ("linear", ROWS0),
            "transform.dense.weight": ("linear", ROWS0),
            "LayerNorm.weight": ("norm", NORM),
            "bias": ("bias", BIAS),  # incl. cls.predictions.bias, tied to the decoder bias
        },
    )


def test_bert_model_pooler_and_the_fallback_without_inputs():
    cfg = transformers.BertConfig(
        num_hidden_layers=1, hidden_size=D, num_attention_heads=HEADS, intermediate_size=128, vocab_size=VOCAB
    )
    torch.manual_seed(0)
    model = transformers.BertModel(cfg)
    plan = plan_of(model, ids())  # the pooler runs: all graph-decided
    assert plan["pooler.dense.weight"].role == "linear"
    with pytest.warns(UserWarning, match="pooler.dense.weight"):
        # without example inputs nothing is traced: module structure decides, with a warning
        fallback = auto_partition(model)
    assert fallback["pooler.dense.weight"].decided_by == "structure"
    assert fallback["encoder.layer.0.attention.self.query.weight"].decided_by == "structure"


def test_t5_encoder_decoder():
    cfg = transformers.T5Config(
        num_layers=2, d_model=D, d_kv=HEAD, num_heads=HEADS, d_ff=128, vocab_size=VOCAB
    )
    torch.manual_seed(0)
    model = transformers.T5ForConditionalGeneration(cfg)
    plan = plan_of(model, ids(), decoder_input_ids=ids(2, 5))
    heads = BlockLayout.rows(0, group=HEAD)
    expect(
        plan,
        model,
        {
            "shared.weight": ("embedding", ROWS0),  # tied input/output embedding
            "relative_attention_bias.weight": ("embedding", ROWS0),
            ".q.weight": ("query", heads),
            ".k.weight": ("key", heads),
            ".v.weight": ("value", ROWS0),
            ".o.weight": ("attn_out", ROWS0),
            "wi.weight": ("linear", ROWS0),
            "wo.weight": ("linear", ROWS0),
            "layer_norm.weight": ("norm", NORM),
        },
    )


def test_mixtral_experts():
    cfg = transformers.MixtralConfig(
        num_hidden_layers=2,
        hidden_size=D,
        num_attention_heads=HEADS,
        num_key_value_heads=2,
        intermediate_size=96,
        vocab_size=VOCAB,
        num_local_experts=4,
    )
    model = build(cfg)
    plan = plan_of(model, ids())
    experts = BlockLayout.rows(1, batch_axes=(0,))  # (expert, output neuron)
    expect(
        plan,
        model,
        {
            **LLAMA,
            "experts.gate_up_proj": ("expert", experts),
            "experts.down_proj": ("expert", experts),
            "mlp.gate.weight": ("linear", ROWS0),  # the router
        },
    )
    assert plan["model.layers.0.mlp.experts.gate_up_proj"].num_blocks == 4 * 2 * 96
