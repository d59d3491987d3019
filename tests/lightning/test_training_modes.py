"""AdamMini under Lightning's training modes: torch.compile, bf16-mixed, bf16-true, gradient
accumulation, gradient clipping, manual optimization, fit(ckpt_path=...)."""

from __future__ import annotations

import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_adam_mini import AdamMini, AdamMiniCallback
from tests.lightning.lit_gpt import LitGPT, example_tokens, trainer


def params_of(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in module.named_parameters()}


def max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[n] - b[n]).abs().max().item() for n in a)


def fit(module: LitGPT, steps: int = 4, **trainer_kwargs) -> tuple[LitGPT, AdamMini]:
    t = trainer(max_steps=steps, callbacks=[AdamMiniCallback(show=False)], **trainer_kwargs)
    t.fit(module)
    return module, t.optimizers[0]


class LossHistory(LitGPT):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.losses: list[float] = []

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.losses.append(loss.item())
        return loss


# a cold torch.compile costs ~50 s on 2 cores: the OptimizedModule variant runs with -m slow
@pytest.mark.parametrize("how", [pytest.param("wrapper", marks=pytest.mark.slow), "in_place"])
def test_torch_compiled_model(how):
    eager, eager_opt = fit(LitGPT(n=16, batch_size=16), steps=3)
    module = LitGPT(n=16, batch_size=16)
    graphs: list[torch.fx.GraphModule] = []

    def inductor_counting_graphs(gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    if how == "wrapper":
        module.model = torch.compile(
            module.model, backend=inductor_counting_graphs
        )  # names gain "_orig_mod."
    else:
        module.model.compile(backend=inductor_counting_graphs)  # nn.Module.compile(): names unchanged
    compiled, opt = fit(module, steps=3)
    assert graphs, "the model was not compiled"
    assert any(n.startswith("model._orig_mod.") for n in opt.plan) == (how == "wrapper")
    roles = {n.replace("_orig_mod.", ""): e.role for n, e in opt.plan.items()}
    assert roles == {n: e.role for n, e in eager_opt.plan.items()}
    got = {n.replace("_orig_mod.", ""): p for n, p in params_of(compiled).items()}
    assert max_diff(params_of(eager), params_of(LitGPT())) > 1e-2  # 3 steps of lr 3e-3 moved them
    # Inductor's kernels sum in another order: the same training up to a few fp32 ulps of weights
    # of magnitude <= 1 (ulp 1.2e-7; measured 1.2e-7 on torch 2.13 CPU)
    assert max_diff(got, params_of(eager)) <= 1e-6


@pytest.mark.parametrize("precision", ["bf16-mixed", "bf16-true"])
def test_bf16_precisions(precision):
    module, opt = fit(LossHistory(n=16, batch_size=16), steps=8, precision=precision)
    param_dtype = torch.bfloat16 if precision == "bf16-true" else torch.float32
    for p in module.parameters():
        assert p.dtype == param_dtype
        state = opt.state[p]
        assert state["exp_avg"].dtype == param_dtype  # m follows the params
        assert state["exp_avg_sq"].dtype == torch.float32  # v is always fp32
        assert torch.isfinite(p).all()
    assert module.losses[-1] < module.losses[0] - 0.1


def test_gradient_accumulation_equals_the_big_batch():
    accumulated, _ = fit(LitGPT(batch_size=8), steps=4, accumulate_grad_batches=2)
    big_batch, opt = fit(LitGPT(batch_size=16), steps=4)
    assert max_diff(params_of(accumulated), params_of(big_batch)) <= 1e-6
    assert all(float(opt.state[p]["step"]) == 4 for p in big_batch.parameters())


def test_gradient_clipping_is_applied_before_the_step():
    clip = 0.05
    clipped, _ = fit(LitGPT(), steps=4, gradient_clip_val=clip)
    module = LitGPT()
    opt = AdamMini(module, lr=module.lr, weight_decay=module.weight_decay, example_inputs=(example_tokens(),))
    norms = []
    for _, batch in zip(range(4), module.train_dataloader()):
        opt.zero_grad()
        module.loss(batch).backward()
        norms.append(torch.nn.utils.clip_grad_norm_(module.parameters(), clip).item())
        opt.step()
    assert min(norms) > clip  # clipping was active at every step
    assert max_diff(params_of(clipped), params_of(module)) == 0.0


class ManualGPT(LitGPT):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        loss = self.loss(batch)
        self.manual_backward(loss)
        opt.step()
        return loss


def test_manual_optimization_equals_automatic():
    manual, _ = fit(ManualGPT(), steps=4)
    automatic, _ = fit(LitGPT(), steps=4)
    assert max_diff(params_of(manual), params_of(automatic)) == 0.0


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps += 1


def test_fit_with_ckpt_path_resumes_exactly(tmp_path):
    def run(steps: int, out: str, ckpt_path=None) -> tuple[LitGPT, int]:
        module = LitGPT(n=16, batch_size=16)  # one step per epoch: checkpoints at epoch ends
        counter = CountSteps()
        t = trainer(
            max_steps=steps,
            enable_checkpointing=True,
            callbacks=[
                AdamMiniCallback(show=False),
                ModelCheckpoint(dirpath=tmp_path / out, save_last=True),
                counter,
            ],
        )
        t.fit(module, ckpt_path=ckpt_path)
        return module, counter.steps

    straight, _ = run(5, "straight")
    run(2, "short")
    resumed, trained = run(5, "resumed", ckpt_path=tmp_path / "short" / "last.ckpt")
    assert trained == 3  # steps 3..5, from the state after step 2
    assert max_diff(params_of(resumed), params_of(straight)) == 0.0
