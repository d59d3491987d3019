"""FSDP2 block reduction in one process, on hand-written numbers: two ranks' Shard(0) pieces are
reduced separately and summed as all_reduce would; a 1-rank gloo group covers the DTensor paths.
(The 2-process comparison with unsharded runs is tests/lightning/test_sharded.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor

from lightning_adam_mini.blocks import BlockReduction
from lightning_adam_mini.sharded import (
    ShardedBlockReduction,
    build_reduction,
    local_tensor,
    new_exp_avg_sq,
)
from partitioners import BlockLayout

CPU = torch.device("cpu")
F64 = torch.float64


def two_ranks(
    make_layout: Callable[[], BlockLayout], full: torch.Tensor | list, rows0: int, group: object = "pg"
):
    """Rank 0 holds rows [0, rows0) of dim 0, rank 1 the rest: (reduction, local grad) per rank."""
    full = torch.as_tensor(full, dtype=F64) if isinstance(full, list) else full
    base = BlockReduction.build(make_layout(), tuple(full.shape), CPU)
    n = full.shape[0]
    return [
        (ShardedBlockReduction(base, tuple(full.shape), 0, rows0, group), full[:rows0]),  # type: ignore[arg-type]
        (ShardedBlockReduction(base, tuple(full.shape), rows0, n - rows0, group), full[rows0:]),  # type: ignore[arg-type]
    ]


# (layout factory, global grad, rows on rank 0, per-block means written out by hand)
CASES = {
    # 2 heads of 3 rows, cut 4 | 2: head 1 straddles. (1+1+1+1+4+4)/6 = 2, (0+4+1+9+4+0)/6 = 3
    "straddling_heads": (
        lambda: BlockLayout.rows(0, group=3),
        [[1, 1], [1, 1], [2, 2], [0, 2], [1, 3], [2, 0]],
        4,
        [[2.0], [3.0]],
    ),
    # one block per column of a Shard(0) tensor (GPT-2 Conv1D): (1+9+1)/3, (4+0+1)/3
    "rows_dim1": (lambda: BlockLayout.rows(1), [[1, 2], [3, 0], [1, 1]], 2, [[11 / 3, 5 / 3]]),
    # whole-tensor block: (1+4+4)/3
    "norm": (lambda: BlockLayout.tensor(), [1, 2, 2], 2, [3.0]),
    # per row, rank 1 empty
    "empty_rank": (lambda: BlockLayout.rows(0), [[3, 4]], 1, [[12.5]]),
    # segments q(2 rows, one block) | v(1 row per block), cut 1 | 2: (4+0+0+4)/4, (1+1)/2
    "segments": (
        lambda: BlockLayout.segmented([(2, 2), (1, 1)]),
        [[2, 0], [0, 2], [1, 1]],
        1,
        [[2.0], [1.0]],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rank_sums_add_up_to_the_block_means(case):
    layout, grad, rows0, want = CASES[case]
    ranks = two_ranks(layout, torch.tensor(grad, dtype=F64), rows0)
    sums = [red.local_sums(g) for red, g in ranks]
    assert all(s.shape == sums[0].shape and s.dtype == F64 for s in sums)
    for red, _ in ranks:
        means = red.from_sums(sums[0] + sums[1])
        assert means.shape == red.v_shape
        assert means.flatten().tolist() == pytest.approx(
            torch.tensor(want, dtype=F64).flatten().tolist(), rel=1e-14
        )


def test_each_rank_part_holds_only_its_rows():
    (red0, g0), (red1, g1) = two_ranks(*CASES["straddling_heads"][:3])
    assert red0.local_sums(g0).flatten().tolist() == pytest.approx([2.0, 2.0, 8.0, 4.0, 0.0, 0.0], rel=1e-14)
    assert red1.local_sums(g1).flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 0.0, 10.0, 4.0], rel=1e-14)
    (red0, g0), (red1, g1) = two_ranks(*CASES["norm"][:3])
    assert red0.local_sums(g0).tolist() == pytest.approx([5.0], rel=1e-14)
    assert red1.local_sums(g1).tolist() == pytest.approx([4.0], rel=1e-14)


def test_expand_gives_each_rank_its_rows_of_the_block_values():
    (red0, _), (red1, _) = two_ranks(*CASES["straddling_heads"][:3])
    v = torch.tensor([[10.0], [20.0]])
    assert red0.expand(v).flatten().tolist() == [10.0, 10.0, 10.0, 20.0]
    assert red1.expand(v).flatten().tolist() == [20.0, 20.0]
    (red0, _), (red1, _) = two_ranks(*CASES["segments"][:3])
    assert red0.expand(v).flatten().tolist() == [10.0]
    assert red1.expand(v).flatten().tolist() == [10.0, 20.0]
    (red0, _), _ = two_ranks(*CASES["rows_dim1"][:3])
    cols = torch.tensor([[1.0, 2.0]])
    assert red0.expand(cols).tolist() == [[1.0, 2.0]]  # broadcast over any number of local rows
    assert red0.v_shape == (1, 2) and not red0.is_elementwise


def test_one_all_reduce_per_group_and_dtype_in_input_order(monkeypatch):
    """Rank 0's view: the fake all_reduce adds what rank 1 contributed for the same call."""
    heads = torch.tensor(CASES["straddling_heads"][1], dtype=torch.float32)
    norm = torch.tensor(CASES["norm"][1], dtype=F64)
    cols = torch.tensor(CASES["rows_dim1"][1], dtype=torch.float32)
    per_rank = [
        two_ranks(CASES["straddling_heads"][0], heads, 4),
        two_ranks(CASES["norm"][0], norm, 2),
        two_ranks(CASES["rows_dim1"][0], cols, 2),
    ]
    calls: list[tuple[object, torch.dtype, int]] = []
    rank1_parts: list[torch.Tensor] = []
    monkeypatch.setattr(dist, "all_reduce", lambda flat, group: rank1_parts.append(flat.clone()))
    ShardedBlockReduction.mean_squares([r[1][0] for r in per_rank], [r[1][1] for r in per_rank])

    def add_rank1(flat: torch.Tensor, group: object) -> None:
        calls.append((group, flat.dtype, flat.numel()))
        flat.add_(rank1_parts[len(calls) - 1])

    monkeypatch.setattr(dist, "all_reduce", add_rank1)
    out = ShardedBlockReduction.mean_squares(
        [per_rank[0][0][0], per_rank[1][0][0], per_rank[2][0][0]],
        [per_rank[0][0][1], per_rank[1][0][1], per_rank[2][0][1]],
    )
    # fp32: heads (6 row sums) + columns (2) in one call; fp64: the norm (1) in another
    assert calls == [("pg", torch.float32, 8), ("pg", F64, 1)]
    assert [o.flatten().tolist() for o in out] == [
        pytest.approx([2.0, 3.0]),
        pytest.approx([3.0]),
        pytest.approx([11 / 3, 5 / 3]),
    ]


@pytest.fixture
def one_rank_mesh() -> Iterator[object]:
    assert not dist.is_initialized()
    store = dist.HashStore()  # pyright: ignore[reportPrivateImportUsage]
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def test_dtensor_paths_on_a_one_rank_mesh(one_rank_mesh):
    mesh = one_rank_mesh
    w = distribute_tensor(torch.ones(6, 2, dtype=torch.bfloat16), mesh, [Shard(0)])
    heads = build_reduction(BlockLayout.rows(0, group=3), w)
    assert isinstance(heads, ShardedBlockReduction)
    assert (heads.offset, heads.length, heads.global_shape, heads.v_shape) == (0, 6, (6, 2), (2, 1))
    v = new_exp_avg_sq(w, heads)
    assert not isinstance(v, DTensor) and v.shape == (2, 1) and v.dtype == torch.float32 and not v.any()
    assert local_tensor(w).shape == (6, 2) and not isinstance(local_tensor(w), DTensor)

    assert heads.group is mesh.get_group()  # reduced over the mesh's group, not the default one

    bias = distribute_tensor(torch.ones(5, dtype=torch.bfloat16), mesh, [Shard(0)])
    elem = build_reduction(BlockLayout.element(), bias)
    assert isinstance(elem, BlockReduction) and elem.is_elementwise and elem.v_shape == (5,)
    v = new_exp_avg_sq(bias, elem)  # v in fp32 for a bf16 parameter, sharded like it
    assert isinstance(v, DTensor) and v.placements == (Shard(0),) and v.dtype == torch.float32

    rep = distribute_tensor(torch.ones(4, 2), mesh, [Replicate()])
    assert type(build_reduction(BlockLayout.rows(0, group=2), rep)) is BlockReduction

    with torch.device("meta"):  # a default device set by the user: block indices stay with p
        on_rep = build_reduction(BlockLayout.rows(0, group=2), rep)
    assert isinstance(on_rep, BlockReduction)
    assert on_rep.row_to_block is not None and on_rep.row_to_block.device == CPU

    mesh2d = init_device_mesh("cpu", (1, 1))
    bad = distribute_tensor(torch.ones(4, 2), mesh2d, [Shard(0), Replicate()])
    with pytest.raises(NotImplementedError, match=r"Shard\(0\) on a 1-D mesh .* on a 2-D mesh"):
        build_reduction(BlockLayout.rows(0), bad)
    with pytest.raises(NotImplementedError, match="fully_shard on a 1-D data-parallel mesh"):
        build_reduction(BlockLayout.rows(0), distribute_tensor(torch.ones(4, 2), mesh, [Shard(1)]))


def test_plain_tensor_state_needs_no_process_group():
    p = torch.ones(3, 4, dtype=torch.bfloat16)
    red = build_reduction(BlockLayout.rows(1), p)
    assert type(red) is BlockReduction and red.v_shape == (1, 4)
    v = new_exp_avg_sq(p, red)
    assert v.shape == (1, 4) and v.dtype == torch.float32 and not v.any()
    elem = build_reduction(BlockLayout.element(), p)
    assert new_exp_avg_sq(p, elem).shape == (3, 4)
    assert local_tensor(p) is p
    assert not dist.is_initialized()


def test_buffers_are_made_on_the_parameter_device_not_the_default_device():
    """Under `with torch.device("meta")` (a default device set by the user), the row sums, v and
    the block index still live where the gradient and the parameter are."""
    (red0, g0), _ = two_ranks(CASES["straddling_heads"][0], CASES["straddling_heads"][1], 4)
    p, g = torch.ones(6, 2), torch.ones(6, 2)
    with torch.device("meta"):
        sums = red0.local_sums(g0)
        red = build_reduction(BlockLayout.rows(0, group=3), p)
        assert isinstance(red, BlockReduction)
        v = new_exp_avg_sq(p, red)
        means = red.mean_square(g)
    assert sums.device == v.device == means.device == CPU
    assert sums.flatten().tolist() == pytest.approx([2.0, 2.0, 8.0, 4.0, 0.0, 0.0], rel=1e-14)
    assert means.flatten().tolist() == pytest.approx([1.0, 1.0], rel=1e-6)
