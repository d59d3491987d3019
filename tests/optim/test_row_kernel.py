"""The one-pass row kernel equals the foreach step on every layout kind (and is used where it fits)."""

import pytest
import torch

from lightning_adam_mini import AdamMini
from lightning_adam_mini import row_kernel as rk
from partitioners import BlockLayout, PartitionPlan, PlanEntry, Segment

# name: (layout, shape, whether the kernel serves it: blocks are runs of whole rows along dim 0)
LAYOUTS = {
    "rows dim 0": (BlockLayout.rows(0), (48, 40), True),
    "rows dim 1": (BlockLayout.rows(1), (40, 48), False),
    "heads": (BlockLayout.rows(0, group=8), (48, 40), True),
    "one head": (BlockLayout.rows(0, group=48), (48, 40), True),
    "segments": (BlockLayout.segmented([Segment(16, 8), Segment(16, 16), Segment(16, 1)]), (48, 40), False),
    "interleaved": (BlockLayout.segmented([Segment(8, 8), Segment(4, 1)], repeat=4), (48, 40), False),
    "experts": (BlockLayout.rows(1, batch_axes=(0,)), (3, 16, 40), False),
    "tensor": (BlockLayout.tensor(), (48, 40), True),
    "element": (BlockLayout.element(), (48, 40), False),
    "bias": (BlockLayout.element(), (40,), True),
}


# The first use builds the kernel (15-60 s on this box when idle; minutes when it is loaded).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def row_step():
    op = rk.row_step_op()
    assert op is not None, "the row kernel did not build (a C++ compiler is needed for this test)"
    return op


def _run(name, fused, steps=5, exp_avg_dtype=None):
    layout, shape, _ = LAYOUTS[name]
    plan = PartitionPlan({"w": PlanEntry(shape, "linear", layout)})
    p = torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    opt = AdamMini(
        [("w", p)], partition=plan, lr=1e-2, weight_decay=0.1, fused=fused, exp_avg_dtype=exp_avg_dtype
    )
    for i in range(steps):
        p.grad = torch.randn(shape, generator=torch.Generator().manual_seed(i + 1))
        opt.step()
    return p.detach(), opt.state[p]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_row_kernel_matches_the_foreach_step(name, row_step, monkeypatch):
    calls = []

    def counting(*args):
        calls.append([p.shape for p in args[0]])
        row_step(*args)

    monkeypatch.setattr(rk, "row_step_op", lambda: counting)
    fused_p, fused_state = _run(name, True)
    plain_p, plain_state = _run(name, False)
    assert bool(calls) == LAYOUTS[name][2], calls
    rel = ((fused_p - plain_p).norm() / plain_p.norm()).item()
    assert rel <= 1e-6, rel
    torch.testing.assert_close(fused_state["exp_avg"], plain_state["exp_avg"], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(fused_state["exp_avg_sq"], plain_state["exp_avg_sq"], rtol=1e-5, atol=1e-12)
    assert fused_state["step"].item() == plain_state["step"].item() == 5


def test_row_kernel_with_bf16_m_matches_the_foreach_step_to_bf16_rounding(row_step):
    """The kernel rounds m to bf16 once per step (the foreach step twice: after the scaling and
    after the addition), so they agree to a bf16 rounding of m, not bit for bit."""
    fused_p, fused_state = _run("heads", True, exp_avg_dtype=torch.bfloat16)
    plain_p, plain_state = _run("heads", False, exp_avg_dtype=torch.bfloat16)
    assert fused_state["exp_avg"].dtype == torch.bfloat16
    m_fused, m_plain = fused_state["exp_avg"].float(), plain_state["exp_avg"].float()
    scale = m_plain.abs().max().item()  # rounding errors are relative to the running sum's size
    torch.testing.assert_close(m_fused, m_plain, rtol=0, atol=2**-6 * scale)
    start = torch.randn(fused_p.shape, generator=torch.Generator().manual_seed(0))
    moved = (plain_p - start).norm()
    assert (fused_p - plain_p).norm() <= 2**-6 * moved  # the steps agree to bf16 rounding


def test_auto_uses_the_kernel_only_for_large_cpu_models(monkeypatch):
    monkeypatch.setattr(rk, "row_step_op", lambda: "kernel")
    small = [torch.zeros(10)]
    assert rk.resolve_fused("auto", small, compiled=False) is None
    monkeypatch.setattr(rk, "AUTO_FUSED_MIN_PARAMS", 10)
    assert rk.resolve_fused("auto", small, compiled=False) == "kernel"
    assert rk.resolve_fused("auto", small, compiled=True) is None
    assert rk.resolve_fused(True, small, compiled=True) == "kernel"  # inside the compiled step
    assert rk.resolve_fused(False, small, compiled=False) is None


def test_fused_true_without_a_compiler_says_so(monkeypatch):
    monkeypatch.setattr(rk, "row_step_op", lambda: None)
    with pytest.raises(RuntimeError, match="could not be built"):
        rk.resolve_fused(True, [torch.zeros(3)], compiled=False)


def test_one_call_updates_many_parameters_split_unevenly_over_threads(row_step, monkeypatch):
    """Rows of all parameters are split by elements over the threads; every split point falls
    inside some parameter, and each row is updated exactly once."""
    shapes = {"a": (300, 257), "b": (1000, 65), "c": (3, 40000), "d": (7,), "e": (129, 3, 5)}
    layouts = {"a": BlockLayout.rows(0), "b": BlockLayout.rows(0, group=10), "c": BlockLayout.tensor()}
    layouts |= {"d": BlockLayout.element(), "e": BlockLayout.rows(0)}
    plan = PartitionPlan({n: PlanEntry(s, "linear", layouts[n]) for n, s in shapes.items()})
    calls = []

    def counting(*args):
        calls.append(len(args[0]))
        row_step(*args)

    monkeypatch.setattr(rk, "row_step_op", lambda: counting)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        results = []
        for fused in (True, False):
            gen = torch.Generator().manual_seed(0)
            params = [(n, torch.nn.Parameter(torch.randn(s, generator=gen))) for n, s in shapes.items()]
            opt = AdamMini(params, partition=plan, lr=1e-2, weight_decay=0.1, fused=fused)
            for _ in range(3):
                for _, p in params:
                    p.grad = torch.randn(p.shape, generator=gen)
                opt.step()
            results.append([(p.detach(), opt.state[p]) for _, p in params])
    finally:
        torch.set_num_threads(threads)
    assert calls == [5, 5, 5]  # one call per step for all of them
    for (fp, fs), (pp, ps) in zip(*results):
        assert ((fp - pp).norm() / pp.norm()).item() <= 1e-6
        torch.testing.assert_close(fs["exp_avg_sq"], ps["exp_avg_sq"], rtol=1e-5, atol=1e-12)
        assert fs["step"].item() == ps["step"].item() == 3


def test_the_kernel_checks_every_parameter_before_it_changes_any(row_step):
    p = [torch.zeros(4, 3), torch.zeros(5, 2)]
    g, m = [torch.ones_like(x) for x in p], [torch.zeros_like(x) for x in p]
    v, steps = [torch.zeros(4), torch.zeros(5)], [torch.zeros(()), torch.zeros(())]
    lr = torch.tensor(1e-2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="parameter 1 does not split into 3 rows"):
        row_step(p, g, m, v, steps, [4, 3], lr, 0.9, 0.999, 1e-8, [0.0, 0.0])
    assert [s.item() for s in steps] == [0.0, 0.0] and not any(x.any() for x in p + m + v)
    with pytest.raises(RuntimeError, match="one entry per parameter"):
        row_step(p, g, m, v, steps, [4], lr, 0.9, 0.999, 1e-8, [0.0, 0.0])
