"""LightningCLI (`--optimizer lightning_adam_mini.AdamMini`), `OptimizerCallable` injection and
Hydra's `_partial_: true`: all hand AdamMini bare `parameters()`; the plan is bound at fit start."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.cli import LightningCLI, OptimizerCallable
from omegaconf import OmegaConf

from lightning_adam_mini import (
    AdamMini,
    AdamMiniCallback,
    adam_mini_optimizers,
    auto_partition,
)
from tests.lightning.lit_gpt import LitGPT, example_tokens, trainer

QUIET = [
    "--trainer.accelerator=cpu",
    "--trainer.devices=1",
    "--trainer.max_steps=2",
    "--trainer.logger=false",
    "--trainer.enable_checkpointing=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]


def expected_plan():
    return auto_partition(LitGPT(), (example_tokens(),))


def run_cli(model_class, *args: str) -> LightningCLI:
    return LightningCLI(model_class, args=["fit", *QUIET, *args], save_config_callback=None)


def test_cli_optimizer_flag_with_the_callback():
    cli = run_cli(
        LitGPT,
        "--optimizer=lightning_adam_mini.AdamMini",
        "--optimizer.lr=3e-4",
        "--trainer.callbacks+=lightning_adam_mini.AdamMiniCallback",
        "--trainer.callbacks.show=false",
    )
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, AdamMini) and opt.is_bound
    assert float(opt.param_groups[0]["lr"]) == 3e-4
    assert opt.plan == expected_plan()
    assert cli.trainer.global_step == 2 and all(opt.state[p]["step"] == 2 for p in cli.model.parameters())


def test_cli_optimizer_flag_alone_binds_itself_at_the_first_step():
    """No callback: the optimizer binds to the network whose forward it saw (LitGPT.model)."""
    cli = run_cli(LitGPT, "--optimizer=lightning_adam_mini.AdamMini", "--optimizer.lr=3e-4")
    assert not any(isinstance(cb, AdamMiniCallback) for cb in cli.trainer.callbacks)
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, AdamMini) and opt.is_bound
    assert float(opt.param_groups[0]["lr"]) == 3e-4
    assert opt.plan == auto_partition(LitGPT().model, (example_tokens(),))
    assert cli.trainer.global_step == 2 and all(opt.state[p]["step"] == 2 for p in cli.model.parameters())


def test_unbound_optimizer_without_any_forward_says_how_to_fix_it():
    model = LitGPT()
    opt = AdamMini(model.parameters(), lr=3e-4)
    with pytest.raises(RuntimeError, match=r"no module was called.*AdamMiniCallback\(\) to its callbacks"):
        opt.step()


class InjectedGPT(LitGPT):
    """The dependency-injection pattern: the optimizer arrives as a callable."""

    def __init__(self, optimizer: OptimizerCallable = torch.optim.AdamW, through_helper: bool = True):
        super().__init__()
        self.optimizer = optimizer
        self.through_helper = through_helper

    def configure_optimizers(self):
        if self.through_helper:
            return adam_mini_optimizers(self, optimizer=self.optimizer)
        return self.optimizer(self.parameters())  # bare tensors: AdamMiniCallback binds them


@pytest.mark.parametrize("through_helper", [True, False])
def test_optimizer_callable_injection(through_helper):
    args = ["--model.optimizer=lightning_adam_mini.AdamMini", "--model.optimizer.lr=2e-3"]
    args += [f"--model.through_helper={str(through_helper).lower()}"]
    if not through_helper:
        args += [
            "--trainer.callbacks+=lightning_adam_mini.AdamMiniCallback",
            "--trainer.callbacks.show=false",
        ]
    cli = run_cli(InjectedGPT, *args)
    opt = cli.trainer.optimizers[0]
    assert isinstance(opt, AdamMini) and opt.plan == expected_plan()
    assert float(opt.param_groups[0]["lr"]) == 2e-3 and cli.trainer.global_step == 2


def test_hydra_partial_optimizer():
    cfg = OmegaConf.create(
        {"_target_": "lightning_adam_mini.AdamMini", "_partial_": True, "lr": 1e-3, "weight_decay": 0.1}
    )
    factory = instantiate(cfg)
    module = LitGPT()
    opt = adam_mini_optimizers(module, optimizer=factory)  # through the helper
    assert opt.plan == expected_plan() and opt.defaults["weight_decay"] == 0.1

    class HydraGPT(LitGPT):
        def configure_optimizers(self):
            return factory(self.parameters())  # bare tensors, bound by the callback

    t = trainer(max_steps=2, callbacks=[AdamMiniCallback(show=False)])
    t.fit(HydraGPT())
    assert t.optimizers[0].plan == expected_plan()

    # a partial called with the module itself traces right away
    assert factory(LitGPT(), example_inputs=(example_tokens(),)).plan == expected_plan()
