"""Lightning Fabric (``fabric.setup(model, optimizer)``) and accelerate
(``accelerator.prepare(model, optimizer)``): the optimizer is built from ``model.parameters()``
and binds itself through the frameworks' module wrappers."""

from __future__ import annotations

from accelerate import Accelerator
from lightning.fabric import Fabric

from lightning_adam_mini import AdamMini
from tests.integrations.common import (
    LR,
    WEIGHT_DECAY,
    assert_same_params,
    batches,
    explicitly_bound_run,
    loss_of,
    tiny_llama,
)


def test_fabric_setup():
    fabric = Fabric(accelerator="cpu", devices=1)
    model = tiny_llama()
    opt = AdamMini(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    wrapped, wrapped_opt = fabric.setup(model, opt)
    assert type(wrapped).__name__ == "_FabricModule"
    for x, y in batches():
        wrapped_opt.zero_grad()
        fabric.backward(loss_of(wrapped, x, y))
        wrapped_opt.step()
    reference, explicit = explicitly_bound_run()
    assert opt.plan == explicit.plan  # named after the network, not the wrapper
    assert_same_params(model, reference)


def test_accelerate_prepare():
    accelerator = Accelerator(cpu=True)
    model = tiny_llama()
    opt = AdamMini(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    model, prepared_opt = accelerator.prepare(model, opt)
    for x, y in batches():
        prepared_opt.zero_grad()
        accelerator.backward(loss_of(model, x, y))
        prepared_opt.step()
    reference, explicit = explicitly_bound_run()
    assert opt.plan == explicit.plan
    assert_same_params(model, reference)
