"""The block reduction across rows (rows on dim 1, ...): squared by chunks, exact, no big temporary."""

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from lightning_adam_mini import AdamMini, blocks
from lightning_adam_mini.blocks import BlockReduction
from partitioners import BlockLayout, PartitionPlan, PlanEntry


def _by_hand(g: torch.Tensor, keep: tuple[int, ...]) -> dict[tuple[int, ...], float]:
    """Sum of squares of the elements sharing their indices on the ``keep`` axes (Python floats)."""
    sums: dict[tuple[int, ...], float] = {}
    for index in torch.cartesian_prod(*(torch.arange(n) for n in g.shape)).reshape(-1, g.ndim).tolist():
        key = tuple(index[a] for a in keep)
        sums[key] = sums.get(key, 0.0) + float(g[tuple(index)]) ** 2
    return sums


@pytest.mark.parametrize(
    ("layout", "shape", "keep"),
    [
        (BlockLayout.rows(1), (7, 4), (1,)),  # dim 0 reduced: the chunks' sums are added
        (BlockLayout.rows(2, batch_axes=(0,)), (5, 3, 4), (0, 2)),  # dim 0 kept: concatenated
        (BlockLayout.rows(1, group=2), (3, 6), (1,)),  # rows grouped into blocks afterwards
    ],
)
@pytest.mark.parametrize("chunk", [1, 5, 8, 1 << 18])  # a row per chunk ... one chunk
def test_sums_across_rows_by_chunks_equal_the_sums_by_hand(layout, shape, keep, chunk, monkeypatch):
    monkeypatch.setattr(blocks, "SQUARE_CHUNK_NUMEL", chunk)
    g = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    red = BlockReduction.build(layout, shape, g.device)
    assert g.ndim - 1 not in red.reduce_dims  # the path under test: the last axis is kept
    got = red.row_square_sums(g)
    assert got.shape == tuple(n if a in keep else 1 for a, n in enumerate(shape))
    for key, expected in _by_hand(g, keep).items():
        index = tuple(key[keep.index(a)] if a in keep else 0 for a in range(g.ndim))
        assert got[index].item() == pytest.approx(expected, rel=1e-6)


def test_low_precision_gradients_are_summed_in_fp32(monkeypatch):
    """bf16 rows across dim 0, one chunk or many: squared and summed after the cast to fp32."""
    g = torch.tensor([[1.0, 3.0], [1 / 256, 2.0], [1 / 256, 1.0]], dtype=torch.bfloat16)
    red = BlockReduction.build(BlockLayout.rows(1), (3, 2), g.device)
    # column 0 by hand: 1 + 2**-16 + 2**-16 (in bf16 the two small squares would round away)
    want = torch.tensor([[1 + 2 * 2**-16, 14.0]])
    for chunk in (1 << 18, 2):
        monkeypatch.setattr(blocks, "SQUARE_CHUNK_NUMEL", chunk)
        got = red.row_square_sums(g)
        assert got.dtype == torch.float32 and torch.equal(got, want), (chunk, got)


def test_eager_step_with_rows_on_dim1_allocates_no_full_size_temporary():
    shape = (256, 4096)  # 4 MiB fp32, not square; squared by chunks of 2**18 elements (1 MiB)
    plan = PartitionPlan({"w": PlanEntry(shape, "linear", BlockLayout.rows(1))})
    p = torch.nn.Parameter(torch.randn(shape, generator=torch.Generator().manual_seed(0)))
    g = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    opt = AdamMini([("w", p)], partition=plan, lr=1e-2, fused=False, compile=False)
    p.grad = g
    opt.step()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    largest = max(e.cpu_memory_usage for e in prof.profiler.function_events)
    assert largest <= p.numel() * 4 // 4, f"a {largest}-byte temporary in a {p.numel() * 4}-byte step"
    v = opt.state[p]["exp_avg_sq"]
    mean_sq = g.double().square().mean(0, keepdim=True)  # both steps saw the same gradient
    torch.testing.assert_close(v.double(), (1 - 0.999**2) * mean_sq, rtol=1e-6, atol=0)
