"""lam-partition: module:factory and Hugging Face config files, offline."""

from __future__ import annotations

import json

import pytest
import torch

from partitioners import PartitionPlan, auto_partition
from partitioners.cli import main
from tests.models.nanogpt import gpt


def test_factory_prints_table_and_writes_yaml(tmp_path, capsys):
    out = tmp_path / "plan.yaml"
    assert main(["tests.models.nanogpt:gpt", "--shape", "2,8", "--yaml", str(out)]) == 0
    table = capsys.readouterr().out
    assert (
        "transformer.h.0.attn.c_attn.weight" in table
        and "segments(dim=0, (q:64/16 + k:64/16 + v:64/1))" in table
    )
    assert PartitionPlan.from_yaml(out.read_text()) == auto_partition(gpt(), (torch.Size([2, 8]),))


def test_rules_file(tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    rules.write_text("- {match: 'transformer.wpe.weight', layout: tensor}\n")
    main(["tests.models.nanogpt:gpt", "--rules", str(rules)])
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("transformer.wpe.weight"))
    assert "tensor" in line and line.rstrip().endswith("rule")


def test_hugging_face_config_file_built_on_meta(tmp_path, capsys):
    import transformers

    cfg = transformers.LlamaConfig(
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=128,
    )
    path = tmp_path / "llama.json"
    path.write_text(json.dumps(cfg.to_dict()))
    main([str(path), "--shape", "1,8", "--yaml", str(tmp_path / "plan.yaml")])
    table = capsys.readouterr().out
    assert "model.layers.1.self_attn.k_proj.weight" in table and "heads(dim=0, size=16)" in table
    plan = PartitionPlan.from_yaml((tmp_path / "plan.yaml").read_text())
    assert plan["lm_head.weight"].role == "output" and {e.decided_by for e in plan.values()} == {"export"}


def test_bad_shape_is_a_usage_error(capsys):
    with pytest.raises(SystemExit):
        main(["tests.models.nanogpt:gpt", "--shape", "two,8"])
    assert "comma-separated" in capsys.readouterr().err
