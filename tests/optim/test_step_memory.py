"""The eager step with a bf16 ``m`` for fp32 params allocates no full-size temporary."""

import torch
from torch.profiler import ProfilerActivity, profile

from lightning_adam_mini import AdamMini
from partitioners import BlockLayout, PartitionPlan, PlanEntry

SHAPE = (1024, 1024)  # 4 MiB fp32: four chunks of 2**18 elements


def _largest_allocation(opt) -> int:
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    return max(e.cpu_memory_usage for e in prof.profiler.function_events)


def test_eager_bf16_m_step_has_no_full_size_temporary_and_matches_the_math():
    plan = PartitionPlan({"w": PlanEntry(SHAPE, "linear", BlockLayout.rows(0))})
    p = torch.nn.Parameter(torch.randn(SHAPE, generator=torch.Generator().manual_seed(0)))
    g = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    p0 = p.detach().clone()
    opt = AdamMini([("w", p)], partition=plan, lr=1e-2, exp_avg_dtype=torch.bfloat16)
    p.grad = g
    opt.step()
    p.data.copy_(p0)
    largest = _largest_allocation(opt)  # second step: state exists
    assert largest <= p.numel() * 4 // 4, f"a {largest}-byte temporary in a {p.numel() * 4}-byte step"

    # second step by hand: m rounded to bf16 after each op, v per row, bias corrections at t=2
    m1 = (0.1 * g).bfloat16()
    m2 = (m1.float() * 0.9).bfloat16()
    m2 = (m2.float() + 0.1 * g).bfloat16()
    v1 = 0.001 * g.square().mean(1, keepdim=True)
    v2 = 0.999 * v1 + 0.001 * g.square().mean(1, keepdim=True)
    denom = (v2 / (1 - 0.999**2)).sqrt() + 1e-8
    expected = p0 - 1e-2 / (1 - 0.9**2) * m2.float() / denom
    m = opt.state[p]["exp_avg"]
    assert m.dtype == torch.bfloat16
    torch.testing.assert_close(m.float(), m2.float(), rtol=2**-7, atol=0)  # one bf16 rounding apart at most
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-2 * 2**-7 * 20)
