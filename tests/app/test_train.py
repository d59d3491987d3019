"""lam-train end to end (tiny overrides): outputs, numbers, plot; pinned plans; other tasks."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from omegaconf import read_write

from lightning_adam_mini import BlockLayout, PartitionPlan
from lightning_adam_mini.app.schema import register_configs
from lightning_adam_mini.app.train import train

from .conftest import run_lam_train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_lam_train_runs_end_to_end_and_writes_the_plot(tmp_path, tiny):
    run_dir = tmp_path / "run"
    proc = run_lam_train([*tiny, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # Lightning's progress bar, the partition table, and the end-of-run report
    assert "Epoch 0" in out and "it/s" in out
    assert "decided-by" in out and "transformer.h.0.attn.c_attn.weight" in out
    for line in ("final val loss:", "tokens/s", "optimizer state:", "AdamW would keep"):
        assert line in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and math.isfinite(metrics["final_val_loss"])
    assert metrics["tokens"] == 6 * 8 * 32 and metrics["tokens_per_s"] > 0
    assert len(metrics["train_curve"]) == 6 and [s for s, _ in metrics["val_curve"]] == [3, 6]
    # Adam-mini keeps m per element + one v per block: about half of AdamW's m + v
    assert 0.5 < metrics["state_vs_adamw"] < 0.56
    assert (run_dir / "loss_curve.png").read_bytes()[:8] == PNG_MAGIC
    assert (run_dir / "csv" / "metrics.csv").exists()  # Lightning's CSVLogger
    plan = PartitionPlan.from_yaml((run_dir / "partition_plan.yaml").read_text())
    assert plan["transformer.h.0.attn.c_attn.weight"].role != "other"


@pytest.mark.distributed
def test_lam_train_fsdp2_on_two_cpu_processes(tmp_path, tiny):
    run_dir = tmp_path / "run"
    overrides = ["trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    # Lightning relaunches sys.argv for rank 1, so this runs the installed console script itself.
    script = Path(sys.executable).with_name("lam-train")
    proc = run_lam_train([*tiny, *overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path, command=[str(script)])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 6 and math.isfinite(metrics["final_val_loss"])


def _train_in_process(overrides, run_dir):
    """train(cfg) with a Hydra context, as lam-train calls it (no subprocess)."""
    register_configs()
    with initialize_config_module("lightning_adam_mini.app.configs", version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    with read_write(cfg.hydra.runtime):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    run_dir.mkdir(parents=True)
    return train(cfg)


@pytest.mark.parametrize(
    "overrides",
    [
        ["optimizer=adamw"],
        ["optimizer=adam_mini_names"],
        ["experiment=llama_text", "model.cfg.n_layers=1", "model.cfg.dim=32", "model.cfg.hidden_dim=64"],
        ["experiment=convnet_shapes", "data.num_train=256", "data.num_val=64", "model.cfg.width=8"],
    ],
    ids=["adamw", "adam_mini_names", "llama", "convnet"],
)
def test_other_options_train(tmp_path, tiny, overrides):
    steps = ["trainer.max_steps=4", "trainer.val_check_interval=2", "trainer.limit_val_batches=2"]
    smoke = tiny if "experiment" not in overrides[0] else ["trainer.accelerator=cpu", "data.batch_size=8"]
    if "experiment=llama_text" in overrides:
        smoke = [*smoke, "data.block_size=32"]
    summary = _train_in_process([*smoke, *overrides, *steps, "scheduler.warmup_steps=1"], tmp_path / "run")
    assert summary["steps"] == 4 and math.isfinite(summary["final_val_loss"])
    ratio = summary["state_vs_adamw"]
    assert (ratio == pytest.approx(1.0)) if "optimizer=adamw" in overrides else ratio < 0.6
    assert (tmp_path / "run" / "loss_curve.png").exists()


# The smoke GPT (1 layer, n_embd 32, 2 heads of 16, vocab 256, 32 positions; lm_head tied): v
# values per plan, counted by hand from its 16 parameter tensors (biases and norm biases: one per
# element, 32 + 96 + 32 + 32 + 128 + 32 + 32 = 384 in all; norm scales: one each, 3 in all):
#   graph plan: wte 256 rows, wpe 32 rows, c_attn q 2 heads + k 2 heads + v 32 rows, attn c_proj
#               32, mlp c_fc 128 + c_proj 32 (output neurons: dim 1 of GPT-2's Conv1D) -> 903
#   name rules: wte 256, wpe 1, c_attn 1 and attn.c_proj 1 (not named q/k/v/attn.proj: one
#               block), mlp c_fc 32 + c_proj 128 (rows along dim 0, whatever the layout) -> 806
SMOKE_PARAMS = 21_984
SMOKE_TENSORS = 16
#   graph plan with the rule {match: "*.mlp.*.weight", layout: element}: the MLP's 32x128 and
#               128x32 matrices per element instead of 128 + 32 blocks -> 903 - 160 + 8192 = 8935
SMOKE_BLOCKS = {"graph": 903, "names": 806, "mlp_element": 8935}
MLP_ELEMENT = 'partition.overrides=[{match: "*.mlp.*.weight", layout: element}]'


def _state_bytes(blocks: int) -> int:
    """m (fp32 per element) + v (fp32 per block) + one fp32 step counter per tensor."""
    return 4 * (SMOKE_PARAMS + blocks + SMOKE_TENSORS)


@pytest.mark.parametrize(
    "overrides, plan",
    [
        ([], "graph"),
        (["partition=names"], "names"),
        (["optimizer=adam_mini_names"], "names"),
        ([MLP_ELEMENT], "mlp_element"),
    ],
    ids=["auto", "partition=names", "optimizer=adam_mini_names", "partition.overrides"],
)
def test_the_chosen_plan_is_the_plan_in_use(tmp_path, tiny, overrides, plan):
    steps = ["trainer.max_steps=1", "trainer.limit_val_batches=1", "plot=false"]
    summary = _train_in_process([*tiny, *overrides, *steps], tmp_path / "run")
    assert summary["optimizer_state_bytes"] == _state_bytes(SMOKE_BLOCKS[plan])  # the optimizer's own v
    assert summary["second_moment_values"] == SMOKE_BLOCKS[plan]
    used = PartitionPlan.from_yaml((tmp_path / "run" / "partition_plan.yaml").read_text())
    if plan == "mlp_element":
        assert str(used["transformer.h.0.mlp.c_fc.weight"].layout) == "element"
        assert used["transformer.h.0.mlp.c_fc.weight"].decided_by == "rule"
        return
    c_attn = used["transformer.h.0.attn.c_attn.weight"]
    assert str(c_attn.layout) == (
        "tensor" if plan == "names" else "segments(dim=1, (q:32/16 + k:32/16 + v:32/1))"
    )
    assert used["transformer.h.0.mlp.c_fc.weight"].layout.axis == (0 if plan == "names" else 1)


def test_pinned_plan_is_read_from_the_file(tmp_path, tiny):
    """The pinned file differs from what tracing gives, so only reading it explains the run."""
    from hydra.utils import instantiate

    from .conftest import compose_train

    cfg = compose_train(tiny)
    net = instantiate(cfg.model)
    traced = instantiate(cfg.partition)(net, (instantiate(cfg.data).example_input(),))
    pinned = traced.replace("transformer.h.0.attn.c_attn.weight", layout=BlockLayout.tensor(), role="other")
    pinned = pinned.replace("transformer.wte.weight", layout=BlockLayout.tensor(), role="other")
    plan_file = tmp_path / "pinned.yaml"
    plan_file.write_text(pinned.to_yaml())
    steps = ["trainer.max_steps=1", "trainer.limit_val_batches=1", "plot=false"]
    summary = _train_in_process(
        [*tiny, *steps, "partition=pinned", f"partition.path={plan_file}"], tmp_path / "run"
    )
    assert (tmp_path / "run" / "partition_plan.yaml").read_text() == plan_file.read_text()
    # c_attn 36 -> 1 block, wte 256 -> 1 block
    assert summary["optimizer_state_bytes"] == _state_bytes(SMOKE_BLOCKS["graph"] - 35 - 255)


@pytest.mark.distributed
def test_lam_train_ddp_on_two_cpu_processes(tmp_path, tiny):
    run_dir = tmp_path / "run"
    overrides = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=3"]
    # Lightning relaunches sys.argv for rank 1, so this runs the installed console script itself.
    script = Path(sys.executable).with_name("lam-train")
    proc = run_lam_train([*tiny, *overrides, f"hydra.run.dir={run_dir}"], cwd=tmp_path, command=[str(script)])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Initializing distributed: GLOBAL_RANK: 1, MEMBER: 2/2" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # 3 steps of 8 windows of 32 tokens on each of the 2 processes
    assert metrics["steps"] == 3 and metrics["tokens"] == 3 * 8 * 32 * 2
    assert math.isfinite(metrics["final_val_loss"])
