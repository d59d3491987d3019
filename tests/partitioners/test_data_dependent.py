"""Data-dependent forwards (``partitioners/upper_bounds.py``): traced at their upper bound.

Small hand-written models whose forward uses ``nonzero``, a boolean branch, an ``.item()`` used
as a length or ``masked_select``; each parameter's blocks are written by hand with the zoo's
independent block helpers. The mode itself is checked on meta tensors, including that it leaves
no global state behind.
"""

from __future__ import annotations

import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.fx.experimental import _config as fx_config
from torch.fx.experimental.proxy_tensor import make_fx

from partitioners import BlockLayout, PartitionPlan, PartitionWarning, auto_partition
from partitioners import trace as trace_module
from partitioners.ops import shape_of
from partitioners.upper_bounds import UnboundedValue, UpperBounds, explore
from partitioners.uses import Outer, Use, parameter_uses

from .zoo.blocks import (
    Blocks,
    element,
    experts,
    heads,
    per_head,
    per_row,
    rows,
    same_partition,
    segments,
    viewed,
    whole,
)
from .zoo.plan_view import plan_blocks

D, FF, E, K, V, T = 8, 12, 4, 2, 16, 6


def meta(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device="meta")


# ---- the mode on meta tensors ---------------------------------------------------------------
def test_nonzero_where_and_argwhere_select_every_element():
    mask = meta(2, 3, dtype=torch.bool)
    with UpperBounds():
        assert mask.nonzero().shape == (6, 2)
        assert torch.argwhere(mask).shape == (6, 2)
        rows_, cols = torch.where(mask)
        assert rows_.shape == cols.shape == (6,)
        assert mask.nonzero(as_tuple=True)[1].shape == (6,)
        assert meta(4, 2)[mask.flatten()[:4]].shape == (4, 2)  # a boolean mask index keeps every row
        assert torch.masked_select(meta(2, 3), mask).shape == (6,)
        # a mask index below the Python calls (an aten op called directly): torch's own meta
        # nonzero, allowed to assume every element nonzero while the mode is on
        assert torch.ops.aten.index.Tensor(meta(2, 3, 4), [mask]).shape == (6, 4)
        values, inverse, counts = torch.unique(meta(5), return_inverse=True, return_counts=True)
        assert (values.shape, inverse.shape, counts.shape) == ((5,), (5,), (5,))


def test_the_indices_made_keep_their_values():
    """Every index of a (2, 3) mask, row by row: (0,0) (0,1) (0,2) (1,0) (1,1) (1,2)."""
    with UpperBounds():
        hit = meta(2, 3, dtype=torch.bool).nonzero()
        assert [int(row[1]) for row in hit] == [0, 1, 2, 0, 1, 2]
        assert hit[:, 0].tolist() == [0, 0, 0, 1, 1, 1]
        assert f"expert_{hit[4][0]}" == "expert_1"


def test_integer_values_take_their_known_upper_bound():
    ids = meta(3, 5, dtype=torch.long)
    with UpperBounds():
        assert int((ids != 0).sum()) == 15  # at most every element counted
        assert int((ids != 0).sum(-1).max()) == 5  # the longest row
        assert list(range((ids > 2).long().sum(0).max())) == [0, 1, 2]
        with pytest.raises(UnboundedValue):
            int(ids.sum())  # token ids: no bound known
        with pytest.raises(UnboundedValue):
            meta(1).item()  # a float has no upper bound


def test_a_tensor_used_as_a_size_or_a_slice_bound_takes_its_upper_bound():
    """Longformer: ``torch.arange(counts.max())``; Pixtral: ``x[:, :h // p]`` with ``h`` a 0-d
    tensor. Both read the value where no torch function sees it."""
    mask = meta(2, 5, dtype=torch.bool)
    with UpperBounds():
        longest = mask.long().sum(1).max()  # at most 5
        assert torch.arange(longest).shape == (5,)
        assert torch.zeros(longest, 2).shape == (5, 2)
        assert meta(2, 7)[:, :longest].shape == (2, 5)
        picked = meta(4, 3)[meta(dtype=torch.long)]  # a 0-d index itself stays a tensor (a pick)
        assert picked.shape == (3,)


def test_example_input_values_are_computed_with():
    """An integer input's values (Qwen2-VL's grid_thw) are known: ops on them, including one
    whose size depends on them, give their exact values; an in-place write forgets them and
    the values of every view of them."""
    grid = meta(2, 3, dtype=torch.long)
    with UpperBounds() as mode:
        mode.know(grid, torch.tensor([[1, 2, 2], [2, 1, 3]]))
        sizes = grid[:, 1] * grid[:, 2]  # 4, 3
        lengths = torch.repeat_interleave(sizes, grid[:, 0])  # 4, 3, 3: no meta kernel gives it
        assert lengths.shape == (3,) and lengths.tolist() == [4, 3, 3]
        assert [t.shape[0] for t in torch.split(meta(10), lengths.tolist())] == [4, 3, 3]
        row = grid[0]
        row.add_(1)
        with pytest.raises(UnboundedValue):
            grid.tolist()
        with pytest.raises(UnboundedValue):
            grid[1].tolist()
        assert torch.arange(3).tolist() == [0, 1, 2]  # made without inputs: known too


def test_booleans_follow_the_script_then_true():
    x = meta(3)
    with UpperBounds([False]) as mode:
        first, second, third = bool(x.any()), bool((x > 0).all()), torch.equal(x, x)
    assert (first, second, third) == (False, True, True)
    assert mode.decisions == [False, True, True]
    with UpperBounds():
        assert not torch.equal(meta(2), meta(3))  # other shapes: never equal, nothing decided
    with UpperBounds([False, True]) as mode:  # ``pad_id in ids`` (HF's padding warning)
        assert (0 not in meta(3, dtype=torch.long), 1 in meta(3, dtype=torch.long)) == (True, True)
    assert mode.decisions == [False, True]


def test_explore_turns_the_last_true_decision_false_until_a_route_runs():
    routes = []

    def run(mode: UpperBounds) -> str:
        with mode:
            a, b = bool(meta(1).any()), bool(meta(1).any())
            routes.append((a, b))
            if b or not a:  # only (True, False) goes on
                raise ValueError("a route that raises")
        return "ran"

    assert explore(run) == "ran"
    assert routes == [(True, True), (True, False)]


def test_explore_raises_the_last_error_when_no_route_runs():
    def run(mode: UpperBounds) -> None:
        with mode:
            bool(meta(1).any())
            raise ValueError("every route raises")

    with pytest.raises(ValueError, match="every route raises"):
        explore(run)


def test_the_mode_leaves_no_global_state():
    getitem, module_to = torch.Tensor.__getitem__, nn.Module.to
    with pytest.raises(ValueError), UpperBounds():
        assert fx_config.meta_nonzero_assume_all_nonzero
        meta(3).nonzero()
        raise ValueError("inside")
    assert torch._C._len_torch_function_stack() == 0
    assert fx_config.meta_nonzero_assume_all_nonzero is False
    assert torch.Tensor.__getitem__ is getitem and nn.Module.to is module_to
    with pytest.raises(NotImplementedError):
        meta(3).nonzero()  # torch's own meta nonzero refuses again
    with pytest.raises(RuntimeError):
        bool(meta(1))


# ---- the graph reader on expert weights picked by a routing index ----------------------------
def uses_of(f, *shapes: tuple[int, ...]) -> list[Use]:
    """The uses of ``f``'s first argument (a weight) in its fake-traced graph."""
    gm = make_fx(f, tracing_mode="fake", pre_dispatch=True)(*(torch.zeros(s) for s in shapes))
    placeholder = next(n for n in gm.graph.nodes if n.op == "placeholder")
    return parameter_uses(placeholder, shape_of(placeholder) or ())


def pick(w: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """``w[e]`` for a 0-d expert id tensor, as the mode traces it (an ``aten.index``)."""
    return torch.ops.aten.index.Tensor(w, [e.long()])


def test_a_3d_expert_weight_picked_by_an_expert_id_keeps_its_expert_axis():
    # W (E, FF, D) read as F.linear(x, W[e]): outputs along dim 1, the expert axis 0 a batch axis
    (use,) = uses_of(lambda w, x, e: F.linear(x, pick(w, e)), (E, FF, D), (3, D), ())
    assert (use.kind, use.axis, use.batch_axes) == ("project", 1, (0,))


def test_a_flat_expert_weight_viewed_per_expert_has_an_outer_expert_axis():
    # W (E*FF, D) viewed (E, FF, D), W[e] used as x @ W[e]: outputs along D (axis 1), each expert
    # a stretch of FF rows of axis 0
    (down,) = uses_of(lambda w, h, e: h @ pick(w.view(E, FF, D), e), (E * FF, D), (3, FF), ())
    assert (down.kind, down.axis, down.batch_axes) == ("project", 1, (Outer(0, FF),))
    # and as x @ W[e].T: outputs along axis 0, whose every row is one (expert, neuron)
    (up,) = uses_of(lambda w, x, e: x @ pick(w.view(E, FF, D), e).T, (E * FF, D), (3, D), ())
    assert (up.axis, up.batch_axes) == (0, (Outer(0, FF),))


def test_a_weight_viewed_per_head_without_a_pick_stays_unexplained():
    # W (8, 8) viewed (2 heads, 4, 8) and batched over the heads by matmul: not experts
    (use,) = uses_of(lambda w, x: x @ w.view(2, 4, 8).transpose(1, 2), (8, 8), (2, 5, 8))
    assert use.kind == "unknown"


def test_a_constant_select_is_no_expert_pick():
    (use,) = uses_of(lambda w, x: F.linear(x, w[1]), (E, FF, D), (3, D))
    assert (use.axis, use.batch_axes) == (1, ())  # a stacked weight's slice: as before


def test_clamp_on_a_projection_output_keeps_its_rows():
    """DBRX's clip_qkv: q|k|v (16 rows: q 2 heads of 4, k 1 head of 4, v 4 rows) clamped."""

    class ClampedQKV(nn.Module):
        def __init__(self):
            super().__init__()
            self.wqkv = nn.Linear(8, 16, bias=False)

        def forward(self, x):
            q, k, v = self.wqkv(x).clamp(min=-8.0, max=8.0).split([8, 4, 4], dim=-1)
            q = q.view(1, 3, 2, 4).transpose(1, 2)
            k, v = (t.view(1, 3, 1, 4).transpose(1, 2).expand(1, 2, 3, 4) for t in (k, v))
            return F.scaled_dot_product_attention(q, k, v)

    plan = auto_partition(ClampedQKV(), (torch.zeros(1, 3, 8),))
    want = segments(per_head(2, 4), per_head(1, 4), per_row(4))((16, 8))
    assert same_partition(plan_blocks(plan["wqkv.weight"]), want), plan["wqkv.weight"]


# ---- whole models ---------------------------------------------------------------------------
def partition(model: nn.Module, *inputs: torch.Tensor) -> tuple[PartitionPlan, str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan = auto_partition(model, inputs)
    text = "\n".join(str(w.message) for w in caught if issubclass(w.category, PartitionWarning))
    return plan, text


@pytest.fixture(params=["export", "fx"])
def tracer(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each whole-model test runs with one tracer only (fx is the fallback when export refuses)."""
    kept = tuple(t for t in trace_module.TRACERS if t[0] == request.param)
    monkeypatch.setattr(trace_module, "TRACERS", kept)
    return request.param


def check(plan: PartitionPlan, expect: dict[str, Blocks], tracer: str) -> None:
    assert sorted(plan) == sorted(expect)
    for name, blocks in expect.items():
        want = blocks(plan[name].shape)
        assert same_partition(plan_blocks(plan[name]), want), f"{name}: {plan[name]}"
        assert plan[name].decided_by == f"{tracer} (upper bounds)", f"{name}: {plan[name].decided_by}"


def named_in(text: str, names: list[str]) -> list[str]:
    return [n for n in names if re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", text)]


class LoopMoE(nn.Module):
    """Top-k router, then a Python loop over the experts hit (``nonzero``), each taking its
    tokens (``where``). Experts as nn.Linear pairs in a ModuleList."""

    def __init__(self):
        super().__init__()
        self.router = nn.Linear(D, E, bias=False)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(D, FF), nn.GELU(), nn.Linear(FF, D)) for _ in range(E)
        )

    def forward(self, x):
        b, t, d = x.shape
        x = x.reshape(-1, d)
        weights, chosen = self.router(x).softmax(-1).topk(K, dim=-1)
        mask = F.one_hot(chosen, E).permute(2, 1, 0)  # (E, K, tokens)
        out = torch.zeros_like(x)
        for e in (mask.sum((1, 2)) > 0).nonzero().flatten().tolist():
            slot, token = torch.where(mask[e])
            out.index_add_(0, token, self.experts[e](x[token]) * weights[token, slot, None])
        return out.view(b, t, d)


def test_moe_loop_over_nonzero_experts_in_a_module_list(tracer: str):
    plan, text = partition(LoopMoE(), torch.randn(2, T, D))
    check(
        plan,
        {"router.weight": rows()}
        | {f"experts.{i}.{j}.weight": rows() for i in range(E) for j in (0, 2)}
        | {f"experts.{i}.{j}.bias": element() for i in range(E) for j in (0, 2)},
        tracer,
    )
    assert not text


class TensorExpertsMoE(nn.Module):
    """The same loop with the experts as tensors: ``up`` (E, FF, D) read as F.linear(x, up[e]),
    ``down`` stored flat (E*FF, D) and read as h @ down.view(E, FF, D)[e] (DBRX's w2)."""

    def __init__(self):
        super().__init__()
        self.router = nn.Linear(D, E, bias=False)
        self.up = nn.Parameter(torch.randn(E, FF, D))
        self.down = nn.Parameter(torch.randn(E * FF, D))

    def forward(self, x):
        weights, chosen = self.router(x).softmax(-1).topk(K, dim=-1)
        mask = F.one_hot(chosen, E).permute(2, 1, 0)
        out = torch.zeros_like(x)
        for e in (mask.sum((1, 2)) > 0).nonzero():
            e = e[0]
            slot, token = torch.where(mask[e])
            h = F.silu(F.linear(x[token], self.up[e]))
            out.index_add_(0, token, (h @ self.down.view(E, FF, D)[e]) * weights[token, slot, None])
        return out


def test_moe_loop_with_3d_and_flat_expert_weights(tracer: str):
    plan, text = partition(TensorExpertsMoE(), torch.randn(T, D))
    check(
        plan,
        {
            "router.weight": rows(),
            "up": experts(axis=1),  # one block per (expert, ffn neuron)
            "down": viewed((E, FF, D), experts(axis=2)),  # one block per (expert, model neuron)
        },
        tracer,
    )
    assert not text


class PadBranch(nn.Module):
    """``if pad.any():`` takes a projection only when some token is padding; a NaN check raises."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.pad_proj = nn.Linear(D, D, bias=False)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        h = self.emb(ids)
        pad = ids == 0
        if pad.any():
            h = h + self.pad_proj(h) * pad[..., None]
        if torch.isnan(h).any():
            raise ValueError("NaN in the embeddings")
        return self.head(h)


def test_a_branch_on_mask_any_takes_the_route_that_runs(tracer: str):
    plan, text = partition(PadBranch(), torch.randint(0, V, (2, T)))
    check(plan, {"emb.weight": rows(), "pad_proj.weight": rows(), "head.weight": rows()}, tracer)
    assert not text


class TrimmedPositions(nn.Module):
    """``.item()`` as a length: the longest unpadded row trims the ids (only when shorter: a
    branch on the value) and sizes the positions."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.pos = nn.Embedding(T, D)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        n = (ids != 0).sum(-1).max().item()
        if n < ids.shape[1]:
            ids = ids[:, :n]
        h = self.emb(ids) + self.pos(torch.arange(n, device=ids.device))
        return self.head(h)


def test_an_item_used_as_a_length_takes_its_upper_bound(tracer: str):
    plan, text = partition(TrimmedPositions(), torch.randint(0, V, (2, T)))
    check(plan, {"emb.weight": rows(), "pos.weight": rows(), "head.weight": rows()}, tracer)
    assert not text


class SelectedTokens(nn.Module):
    """``masked_select`` keeps the non-padding tokens' features, which a projection reads when
    there are any."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.norm = nn.LayerNorm(D)
        self.proj = nn.Linear(D, 3)

    def forward(self, ids):
        h = self.norm(self.emb(ids))
        kept = torch.masked_select(h, (ids != 0)[..., None]).view(-1, D)
        return self.proj(kept) if kept.shape[0] else h.new_zeros(0, 3)


def test_masked_select_keeps_every_element(tracer: str):
    plan, text = partition(SelectedTokens(), torch.randint(0, V, (2, T)))
    check(
        plan,
        {
            "emb.weight": rows(),
            "norm.weight": whole(),
            "norm.bias": element(),
            "proj.weight": rows(),
            "proj.bias": element(),
        },
        tracer,
    )
    assert not text


class PackedSequences(nn.Module):
    """Sequences packed in one row and split by lengths computed from an integer input (the
    count and size of each image's sequences, as Qwen2-VL's ``grid_thw``), attention per
    sequence; fused q | k | v in 2 heads of 4."""

    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.o = nn.Linear(D, D, bias=False)

    def forward(self, x, grid):  # x (tokens, D), grid (images, 2)
        lengths = torch.repeat_interleave(grid[:, 1], grid[:, 0]).tolist()
        q, k, v = self.qkv(x).view(-1, 3, 2, 4).permute(1, 2, 0, 3).unbind(0)  # each (2, tokens, 4)
        parts = zip(*(t.split(lengths, dim=1) for t in (q, k, v)))
        out = torch.cat([F.scaled_dot_product_attention(*p) for p in parts], dim=1)
        return self.o(out.transpose(0, 1).reshape(-1, D))


def test_lengths_computed_from_an_integer_input_take_its_values(tracer: str):
    plan, text = partition(PackedSequences(), torch.randn(T, D), torch.tensor([[1, 2], [2, 2]]))
    check(
        plan, {"qkv.weight": segments(per_head(2, 4), per_head(2, 4), per_row(D)), "o.weight": rows()}, tracer
    )
    assert not text


class FloatBranch(nn.Module):
    """A branch on a float statistic of the data: it has no upper bound, so no route is taken."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.proj = nn.Linear(D, D)

    def forward(self, ids):
        h = self.emb(ids)
        if float(h.std()) > 1.0:
            h = h / h.std()
        return self.proj(h)


def test_code_that_still_cannot_be_traced_falls_back_with_a_warning():
    plan, text = partition(FloatBranch(), torch.randint(0, V, (2, T)))
    assert "could not be traced" in text and "upper bounds" in text
    assert named_in(text, ["proj.weight", "proj.bias"]) == ["proj.weight", "proj.bias"]
    assert plan["proj.weight"].decided_by == "structure"
    assert plan["emb.weight"].decided_by == "export (emb)"  # reached before the branch: read alone


class MaskedThenFloatBranch(nn.Module):
    """A boolean mask index before a block, then a branch on a float: the whole model can't be
    traced, and the meta run must get past the mask to reach ``block``."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.block = nn.Linear(D, D)
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        h = self.emb(ids)
        h = self.block(h[h.norm(dim=-1) > 1.0])
        if float(h.std()) > 1.0:
            h = h / h.std()
        return self.head(h)


def test_the_meta_run_goes_past_data_dependent_code_to_the_modules_after_it():
    plan, text = partition(MaskedThenFloatBranch(), torch.randint(0, V, (2, T)))
    assert (
        plan["block.weight"].decided_by == "export (block)" and plan["block.weight"].layout == rows_layout()
    )
    assert named_in(text, ["emb.weight", "block.weight", "block.bias", "head.weight"]) == ["head.weight"]


def rows_layout() -> BlockLayout:
    return BlockLayout.rows(0)


def test_a_model_on_meta_is_partitioned_without_real_memory():
    """Parameters that live on ``meta`` have no data to read: the plan is the same as on CPU."""
    with torch.device("meta"):
        model = TensorExpertsMoE()
    plan, text = partition(model, meta(T, D))
    assert plan == partition(TensorExpertsMoE(), torch.randn(T, D))[0]
    assert all(p.device.type == "meta" for p in model.parameters())
    assert not text


def test_every_parameter_of_a_traced_moe_is_a_graph_input():
    """The graph the mode gives reads every expert: the loop ran for all of them."""
    from partitioners.trace import trace

    getitem, module_to = torch.Tensor.__getitem__, nn.Module.to
    traced = trace(LoopMoE(), (torch.randn(2, T, D),), collapse_repeats=False)
    assert torch.Tensor.__getitem__ is getitem and nn.Module.to is module_to  # restored after the trace
    assert torch._C._len_torch_function_stack() == 0 and not fx_config.meta_nonzero_assume_all_nonzero
    assert traced.bounded and traced.method == "export"
    used = {name for node, name in traced.params.items() if node.users}
    assert used == {n for n, _ in LoopMoE().named_parameters()}
    assert isinstance(traced.graph, fx.Graph)


# ---- a module cast in the forward (not data-dependent, but it failed the same MoE routers) -----
class CastRouter(nn.Module):
    """Switch Transformers' router: ``self.classifier = self.classifier.to(self.dtype)``."""

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(D, E, bias=False)

    def forward(self, x):
        self.classifier = self.classifier.to(x.dtype)
        return self.classifier(x).softmax(-1)


def test_a_module_cast_to_its_own_dtype_in_the_forward_is_traced():
    plan, text = partition(CastRouter(), torch.randn(T, D))
    assert (plan["classifier.weight"].layout, plan["classifier.weight"].decided_by) == (
        rows_layout(),
        "export",
    )
    assert not text


# ---- grad-mode and autocast regions (export wraps them in higher-order ops) ---------------------
class GradModeRegions(nn.Module):
    """q/k/v computed inside ``torch.no_grad()`` (v's weight first rescaled in place, as RWKV's
    eval forward does), with an autocast region nested in it; the attention and the output
    projection after them, in a ``set_grad_enabled(True)`` region. 2 heads of 4."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(V, D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        self.head = nn.Linear(D, V, bias=False)

    def forward(self, ids):
        h = self.emb(ids)
        B, T, _ = h.shape
        with torch.no_grad():
            self.v.weight.div_(2.0)
            q = self.q(h).view(B, T, 2, 4).transpose(1, 2)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                k = self.k(h).float().view(B, T, 2, 4).transpose(1, 2)
            v = self.v(h).view(B, T, 2, 4).transpose(1, 2)
        with torch.set_grad_enabled(True):
            out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, D)
            h = h + self.o(out)
        return self.head(h)


def test_parameters_used_in_grad_mode_and_autocast_regions_are_read():
    plan, text = partition(GradModeRegions(), torch.randint(0, V, (2, T)))
    expect = {"emb.weight": rows(), "q.weight": heads(4), "k.weight": heads(4)}
    expect |= {"v.weight": rows(), "o.weight": rows(), "head.weight": rows()}
    assert sorted(plan) == sorted(expect)
    for name, blocks in expect.items():
        assert same_partition(plan_blocks(plan[name]), blocks(plan[name].shape)), f"{name}: {plan[name]}"
        assert plan[name].decided_by == "export", f"{name}: {plan[name].decided_by}"
    assert not text


def test_grad_mode_and_autocast_subgraphs_are_inlined():
    from partitioners.subgraphs import inline_subgraph_calls

    wrapper = trace_module._TensorOutputs(
        trace_module.meta_copy(GradModeRegions()), (meta(2, T, dtype=torch.long),), {}
    )
    program = torch.export.export(wrapper, wrapper.inputs(), strict=False)
    names = lambda: [n.op if n.op != "call_function" else str(n.target) for n in program.graph.nodes]  # noqa: E731
    # what export gives: the no_grad region as one call, with the autocast region nested in it
    assert [name for name in names() if name.startswith("wrap_with")] == ["wrap_with_set_grad_enabled"]
    inline_subgraph_calls(program.graph_module)
    program.graph.lint()
    ops = names()
    assert not [
        name for name in ops if name.startswith("wrap_with") or "getitem" in name or name == "get_attr"
    ]
    assert ops.count("aten.linear.default") == 5 and ops.count("aten.div_.Tensor") == 1
    # each projection reads its own parameter placeholder (v's through the in-place rescale)
    params = program.graph_signature.inputs_to_parameters
    weights = [n.args[1] for n in program.graph.nodes if str(n.target) == "aten.linear.default"]
    read = sorted(params[(w.args[0] if w.op == "call_function" else w).name] for w in weights)
    assert read == [f"model.{name}.weight" for name in ("head", "k", "o", "q", "v")]
