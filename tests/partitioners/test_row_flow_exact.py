"""The row-following code (``partitioners/row_flow.py``) on small hand-written ATen graphs.

Each graph is a few ops traced with ``make_fx``; the labels every op should carry (the weight row
that produced each element, -1 for none) and the row sets of every head are written out by hand
from the ops, never read from the code under test.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sympy
import torch
import torch.nn.functional as F
from torch import fx, nn
from torch._dynamo.source import ConstantSource
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.sym_node import SymNode
from torch.fx.experimental.symbolic_shapes import ShapeEnv

from partitioners import BlockLayout, auto_partition, row_flow
from partitioners.attention import AttentionSite
from partitioners.ops import op_name
from partitioners.row_flow import (
    LabelFlow,
    attention_fed,
    head_row_sets,
    index_labels,
    propagate,
    trace_rows,
)


def graph(f: Callable[..., torch.Tensor], *shapes: tuple[int, ...]) -> dict[str, fx.Node]:
    """``f`` traced on fake tensors of ``shapes``: its nodes by name."""
    gm = make_fx(f, tracing_mode="fake", pre_dispatch=True)(*(torch.zeros(s) for s in shapes))
    return {n.name: n for n in gm.graph.nodes}


def labels_of(flow: LabelFlow, node: fx.Node) -> list:
    return flow.labels[node].tolist()


def rows(n: int) -> torch.Tensor:
    """Labels of a projection output of ``n`` rows (batch 1): element ``i`` came from row ``i``."""
    return torch.arange(n, dtype=torch.int32).view(1, n)


def fs(*sets: tuple[int, ...]) -> list[frozenset[int]]:
    return [frozenset(s) for s in sets]


# ---- LabelFlow -----------------------------------------------------------------------------
def test_components_without_merges_are_the_rows_themselves():
    assert LabelFlow().components(4).tolist() == [0, 1, 2, 3]


def test_components_follow_chains_of_merges_to_the_smallest_row():
    flow = LabelFlow()
    # 5-3, 3-0 (a chain 0-3-5 whose smallest member is reached in two hops), 2-1, and 6-4
    flow.merged.append(torch.tensor([5 << 32 | 3, 2 << 32 | 1], dtype=torch.long))
    flow.merged.append(torch.tensor([3 << 32 | 0, 6 << 32 | 4, 2 << 32 | 1], dtype=torch.long))
    assert flow.components(8).tolist() == [0, 1, 1, 0, 4, 0, 4, 7]


def test_components_of_a_long_chain_given_from_the_far_end():
    flow = LabelFlow()  # 7-6, 6-5, ..., 1-0: every row reaches 0
    flow.merged.append(torch.tensor([(i + 1) << 32 | i for i in range(7)], dtype=torch.long))
    assert flow.components(9).tolist() == [0] * 8 + [8]


def test_pair_merges_distinct_labelled_rows_and_keeps_the_first_label():
    flow = LabelFlow()
    first = torch.tensor([0, 1, -1, 3, -1, 5], dtype=torch.int32)
    other = torch.tensor([4, 1, 2, -1, -1, 6], dtype=torch.int32)
    out = flow.pair(first, other)
    assert out.tolist() == [0, 1, 2, 3, -1, 5]
    # only (0, 4) and (5, 6) meet: 1 meets itself, and -1 is no row
    assert [m.tolist() for m in flow.merged] == [[0 << 32 | 4, 5 << 32 | 6]]


def test_pair_records_nothing_when_no_two_rows_meet():
    flow = LabelFlow()
    out = flow.pair(torch.tensor([0, -1, 2]), torch.tensor([-1, 1, 2]))
    assert out.tolist() == [0, 1, 2]
    assert flow.merged == []


def test_pair_of_a_duplicate_pair_is_recorded_once():
    flow = LabelFlow()
    flow.pair(torch.tensor([0, 0, 1]), torch.tensor([2, 2, 3]))
    assert [m.tolist() for m in flow.merged] == [[0 << 32 | 2, 1 << 32 | 3]]


# ---- index_labels and head_row_sets ----------------------------------------------------------
def test_index_labels_along_each_dim():
    nodes = graph(lambda x: x * 2, (2, 3))
    mul = nodes["mul"]
    assert index_labels(mul, -1).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert index_labels(mul, 1).tolist() == [[0, 1, 2], [0, 1, 2]]
    assert index_labels(mul, 0).tolist() == [[0, 0, 0], [1, 1, 1]]
    assert index_labels(mul, -1).dtype == torch.int32


def test_index_labels_of_a_scalar_or_a_tuple_is_none():
    nodes = graph(lambda x: x.sum(), (2, 3))
    assert index_labels(nodes["sum_1"], 0) is None
    nodes = graph(lambda x: x.split(1), (2, 3))
    assert index_labels(nodes["split"], 0) is None


def test_head_row_sets_one_per_head_along_the_axis():
    # (batch 2, heads 2, head_dim 3): head h holds rows 3h..3h+2 in both batch entries
    labels = torch.arange(6, dtype=torch.int32).view(1, 2, 3).expand(2, 2, 3)
    assert head_row_sets(labels, -1, LabelFlow()) == fs((0, 1, 2), (3, 4, 5))
    # the head dim first: (head_dim 3, heads 2)
    assert head_row_sets(labels[0].T, 0, LabelFlow()) == fs((0, 1, 2), (3, 4, 5))
    # along the heads axis instead: each "head" is one position of the 3
    assert head_row_sets(labels[0], 0, LabelFlow()) == fs((0, 3), (1, 4), (2, 5))


def test_head_row_sets_drop_unlabelled_elements_and_heads():
    labels = torch.tensor([[5, -1, 4], [-1, -1, -1], [1, 0, -1]], dtype=torch.int32)
    assert head_row_sets(labels, -1, LabelFlow()) == fs((0, 1), (4, 5))
    assert head_row_sets(torch.full((2, 3), -1), -1, LabelFlow()) == []
    # a head whose only row is row 0
    assert head_row_sets(torch.tensor([[-1, 0], [2, 3]]), -1, LabelFlow()) == fs((0,), (2, 3))


def test_head_row_sets_of_a_scalar_label():
    assert head_row_sets(torch.tensor(3, dtype=torch.int32), -1, LabelFlow()) == fs((3,))


def test_head_row_sets_add_the_rows_merged_into_a_head():
    flow = LabelFlow()
    flow.merged.append(torch.tensor([0 << 32 | 6, 7 << 32 | 1], dtype=torch.long))
    flow.merged.append(torch.tensor([4 << 32 | 9], dtype=torch.long))  # 9 lies past every head
    labels = torch.tensor([[0, 1], [2, 3], [4, 5]], dtype=torch.int32)
    assert head_row_sets(labels, -1, flow) == fs((0, 1, 6, 7), (2, 3), (4, 5, 9))
    # the merged partner is on the left of the pair (the largest row lies only there)
    flow = LabelFlow(merged=[torch.tensor([9 << 32 | 2], dtype=torch.long)])
    assert head_row_sets(labels, -1, flow) == fs((0, 1), (2, 3, 9), (4, 5))


# ---- propagate: data movement ----------------------------------------------------------------
def moved(x: torch.Tensor) -> torch.Tensor:
    y = x * 2.0  # (1, 6)
    a, b = y.split([2, 4], dim=-1)
    z = torch.cat([b, a], dim=-1).view(1, 3, 2).transpose(1, 2)  # rows 2 3 4 5 0 1 -> (1, 2, 3)
    return z[:, :, 1:].flip(-1).clone()


def test_labels_follow_split_cat_view_transpose_slice_flip():
    nodes = graph(moved, (1, 6))
    flow = propagate(nodes["mul"], rows(6))
    assert labels_of(flow, nodes["cat"]) == [[2, 3, 4, 5, 0, 1]]
    assert labels_of(flow, nodes["view"]) == [[[2, 3], [4, 5], [0, 1]]]
    assert labels_of(flow, nodes["transpose"]) == [[[2, 4, 0], [3, 5, 1]]]
    assert labels_of(flow, nodes["slice_1"]) == [[[4, 0], [5, 1]]]
    assert labels_of(flow, nodes["clone"]) == [[[0, 4], [1, 5]]]
    assert flow.start == list(nodes).index("mul")
    assert flow.merged == []


def test_view_of_expanded_labels_is_run_as_reshape():
    # the start labels are an expanded arange (batch 3 shares one row of labels): ``view`` of
    # the contiguous output must still run on them
    nodes = graph(lambda x, w: F.linear(x, w).view(6).flip(0), (3, 3), (2, 3))
    flow = propagate(nodes["linear"], index_labels(nodes["linear"], -1))
    assert labels_of(flow, nodes["view"]) == [0, 1, 0, 1, 0, 1]
    assert labels_of(flow, nodes["flip"]) == [1, 0, 1, 0, 1, 0]
    # the same for the _unsafe_view a decomposed reshape gives
    nodes = graph(lambda x, w: torch.ops.aten._unsafe_view(F.linear(x, w), [6]), (3, 3), (2, 3))
    flow = propagate(nodes["linear"], index_labels(nodes["linear"], -1))
    assert labels_of(flow, nodes["_unsafe_view"]) == [0, 1, 0, 1, 0, 1]
    # and for view_as / reshape_as, whose shape comes from another (unlabelled) tensor
    nodes = graph(lambda x, w, o: F.linear(x, w).view_as(o).flip(0), (3, 3), (2, 3), (6,))
    flow = propagate(nodes["linear"], index_labels(nodes["linear"], -1))
    assert labels_of(flow, nodes["flip"]) == [1, 0, 1, 0, 1, 0]
    nodes = graph(lambda x, w, o: F.linear(x, w).reshape_as(o).flip(0), (3, 3), (2, 3), (2, 3))
    flow = propagate(nodes["linear"], index_labels(nodes["linear"], -1))
    assert labels_of(flow, nodes["flip"]) == [[1, 0, 1], [0, 1, 0]]


def test_rotate_every_two_with_reshape_as_pairs_neighbouring_rows():
    """RoFormer's rotary: ``stack([-q[..., 1::2], q[..., ::2]], -1).reshape_as(q)``."""

    def f(x, w, cos, sin):
        q = F.linear(x, w)  # (1, 4)
        return q * cos + torch.stack([-q[..., 1::2], q[..., ::2]], dim=-1).reshape_as(q) * sin

    nodes = graph(f, (1, 3), (4, 3), (1, 4), (1, 4))
    flow = propagate(nodes["linear"], rows(4))
    assert labels_of(flow, nodes["reshape_as"]) == [[1, 0, 3, 2]]
    assert labels_of(flow, nodes["add"]) == [[0, 1, 2, 3]]
    assert flow.components(4).tolist() == [0, 0, 2, 2]


def test_scalar_arithmetic_and_casts_keep_labels_without_mixing():
    nodes = graph(lambda x: ((x * 2.0).to(torch.float64) / 3.0 - 1.0).neg(), (1, 3))
    flow = propagate(nodes["mul"], rows(3), mixing=False)
    assert labels_of(flow, nodes["neg"]) == [[0, 1, 2]]


def test_op_with_two_tensors_stops_the_flow_without_mixing_only():
    def f(x, cos):
        y = x * 2.0
        return (y * cos).transpose(0, 1)

    nodes = graph(f, (1, 3), (1, 3))
    flow = propagate(nodes["mul"], rows(3), mixing=False)
    assert set(flow.labels) == {nodes["mul"]}
    flow = propagate(nodes["mul"], rows(3))
    assert labels_of(flow, nodes["transpose"]) == [[0], [1], [2]]


def test_other_ops_end_the_flow():
    nodes = graph(lambda x: torch.cumsum(x * 2.0, 1).transpose(0, 1), (1, 3))
    flow = propagate(nodes["mul"], rows(3))
    assert set(flow.labels) == {nodes["mul"]}


def test_sizes_computed_in_the_graph_are_read_from_their_values():
    """A size node (``sym_size`` of a traced shape) is used as its value: an int or a SymInt that
    is a known constant keeps the flow going; a symbolic size (unbacked, or backed by a hint that
    reading it would turn into a guard), or a node the tracer recorded no value for, ends it."""
    env = ShapeEnv()
    sizes = {
        "int": 3,
        "constant": torch.SymInt(SymNode(sympy.Integer(3), env, int, 3)),
        "unbacked": env.create_unbacked_symint(),
        "backed": env.create_symintnode(env.create_symbol(3, source=ConstantSource("s")), hint=3),
        "missing": None,
    }
    g = fx.Graph()
    x = g.placeholder("x")
    x.meta["val"] = torch.zeros(1, 6)
    views = {}
    for name, value in sizes.items():
        size = g.placeholder(name)
        if value is not None:
            size.meta["val"] = value
        views[name] = g.call_function(torch.ops.aten.view.default, (x, [size, 2]))
        views[name].meta["val"] = torch.zeros(3, 2)
    cut = g.call_function(torch.ops.aten.slice.Tensor, (x, 1, size, 6))  # size: the "missing" node
    cut.meta["val"] = torch.zeros(1, 6)
    g.output((*views.values(), cut))
    flow = propagate(x, rows(6))
    assert {name for name, view in views.items() if view in flow.labels} == {"int", "constant"}
    assert cut not in flow.labels
    assert labels_of(flow, views["int"]) == labels_of(flow, views["constant"]) == [[0, 1], [2, 3], [4, 5]]


# ---- residual stream -------------------------------------------------------------------------
def residual(x, w_in, w, bias):
    s = F.linear(x, w_in)  # the stream, itself a projection's output
    h = F.linear(torch.tanh(s), w)  # f(s)
    out = s + h  # s + f(s): each side is computed from the other or is what it is computed from
    return out + bias, out.transpose(0, 1)


def test_a_residual_sum_ends_the_rows():
    nodes = graph(residual, (1, 3), (3, 3), (3, 3), (3,))
    flow = propagate(nodes["linear_1"], rows(3))  # f's rows: the stream is what f is computed from
    assert set(flow.labels) == {nodes["linear_1"]}
    flow = propagate(nodes["linear"], rows(3))  # the stream's rows: f(s) is computed from them
    assert set(flow.labels) == {nodes["linear"], nodes["tanh"]}  # tanh(s) keeps them; the sum ends them


def test_a_residual_difference_ends_the_rows():
    def f(x, w):
        return x - F.linear(x, w)  # the stream is an input of the graph

    nodes = graph(f, (1, 3), (3, 3))
    flow = propagate(nodes["linear"], rows(3))
    assert set(flow.labels) == {nodes["linear"]}


def test_a_bias_a_table_or_a_labelled_partner_does_not_end_the_rows():
    def f(x, w, bias, table):
        h = F.linear(x, w)
        a = h + bias  # a placeholder (a parameter), broadcast
        b = a - table[0]  # a row of a table, broadcast...
        return b + h.flip(-1), b.sub_(1.0)  # ...and a labelled partner

    nodes = graph(f, (1, 3), (3, 3), (3,), (4, 3))
    flow = propagate(nodes["linear"], rows(3))
    assert labels_of(flow, nodes["add"]) == [[0, 1, 2]]
    assert labels_of(flow, nodes["sub"]) == [[0, 1, 2]]
    assert labels_of(flow, nodes["add_1"]) == [[0, 1, 2]]
    assert [m.tolist() for m in flow.merged] == [[0 << 32 | 2, 2 << 32 | 0]]


def test_an_in_place_residual_sum_ends_the_rows():
    def f(x, w):
        s = torch.tanh(x)
        h = F.linear(s, w)
        return h.add_(s).transpose(0, 1)

    nodes = graph(f, (1, 3), (3, 3))
    add = next(n for name, n in nodes.items() if name.startswith("add"))
    flow = propagate(nodes["linear"], rows(3))
    assert add not in flow.labels


def test_a_sum_with_a_tensor_made_apart_from_the_rows_keeps_them():
    def f(x, w):
        h = F.linear(x, w)
        return h + torch.ones(1, 3)

    nodes = graph(f, (1, 3), (3, 3))
    flow = propagate(nodes["linear"], rows(3))
    assert labels_of(flow, nodes["add"]) == [[0, 1, 2]]


def lora(x, w, down, up):
    """A projection with a low-rank adapter added to its output (PEFT's LoRA), in 2 heads of 2."""
    q = F.linear(x, w) + F.linear(F.linear(x, down), up) * 0.5  # (1, 3, 4)
    return q.view(1, 3, 2, 2).transpose(1, 2)


def test_an_adapter_added_to_a_projection_passes_both_projections_rows():
    nodes = graph(lora, (1, 3, 4), (4, 4), (1, 4), (4, 1))
    moved = [[[[0, 1]] * 3, [[2, 3]] * 3]]
    for projection in ("linear", "linear_2"):  # the projection, and the adapter's up-projection
        flow = propagate(nodes[projection], index_labels(nodes[projection], -1))
        assert labels_of(flow, nodes["transpose"]) == moved
        assert flow.merged == []
    # the down-projection's rows go into the up-projection: a linear, not data movement
    flow = propagate(nodes["linear_1"], index_labels(nodes["linear_1"], -1))
    assert set(flow.labels) == {nodes["linear_1"]}


def test_a_residual_sum_ends_the_rows_of_an_adapted_projection():
    """A stream, a layer whose output projection has an adapter, and the sum with the stream:
    the projection's and the up-projection's rows pass the adapter's sum and end at the stream's."""

    def f(x, w, down, up):
        s = torch.tanh(x)  # (1, 3)
        h = F.linear(s, w) + F.linear(F.linear(s, down), up)
        return (s + h).flip(-1)

    nodes = graph(f, (1, 3), (3, 3), (1, 3), (3, 1))
    for projection in ("linear", "linear_2"):
        flow = propagate(nodes[projection], rows(3))
        assert labels_of(flow, nodes["add"]) == [[0, 1, 2]]
        assert nodes["add_1"] not in flow.labels and nodes["flip"] not in flow.labels


class LoRAAttention(nn.Module):
    """Attention whose q, k and v projections each have a rank-2 adapter (PEFT's LoRA) added to
    their outputs: 2 heads of 4."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(8, 8, bias=False) for _ in range(4))
        self.down = nn.ModuleList(nn.Linear(8, 2, bias=False) for _ in range(3))
        self.up = nn.ModuleList(nn.Linear(2, 8, bias=False) for _ in range(3))

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = (
            (proj(x) + up(down(x))).view(B, T, 2, 4).transpose(1, 2)
            for proj, down, up in zip((self.q, self.k, self.v), self.down, self.up)
        )
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, 8)
        return x + self.o(out)


def test_an_attention_with_adapters_reads_heads_for_the_query_and_key_and_their_adapters():
    plan = auto_partition(LoRAAttention(), (torch.zeros(2, 5, 8),))
    heads = BlockLayout.rows(0, group=4)
    assert {name: plan[name].layout for name in plan} == {
        "q.weight": heads,
        "k.weight": heads,
        "v.weight": BlockLayout.rows(0),
        "o.weight": BlockLayout.rows(0),
        "down.0.weight": BlockLayout.rows(0),
        "down.1.weight": BlockLayout.rows(0),
        "down.2.weight": BlockLayout.rows(0),
        "up.0.weight": heads,
        "up.1.weight": heads,
        "up.2.weight": BlockLayout.rows(0),
    }
    assert plan["v.weight"].role == plan["up.2.weight"].role == "value"


# ---- rotary, complex views and norms ---------------------------------------------------------
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def test_rotary_pairs_the_rows_of_each_half():
    def f(x, w, cos, sin):  # one head of 4: rotate_half pairs row i with row i + 2
        q = F.linear(x, w)
        return q * cos + rotate_half(q) * sin

    nodes = graph(f, (1, 4), (8, 4), (1, 8), (1, 8))
    flow = propagate(nodes["linear"], rows(8))
    assert labels_of(flow, nodes["add"]) == [[0, 1, 2, 3, 4, 5, 6, 7]]
    assert flow.components(8).tolist() == [0, 1, 2, 3, 0, 1, 2, 3]
    # as two heads of 4 the halves are the other head's rows: 0..3 and 4..7 merged pairwise
    assert head_row_sets(flow.labels[nodes["add"]].view(1, 2, 4), -1, flow) == fs((0, 1, 2, 3, 4, 5, 6, 7))
    assert head_row_sets(flow.labels[nodes["add"]], -1, flow) == fs((0, 1, 2, 3, 4, 5, 6, 7))


def test_view_as_complex_pairs_neighbours_and_view_as_real_splits_them_again():
    def f(x, w, freqs):
        q = F.linear(x, w).view(1, 3, 2)
        rotated = torch.view_as_complex(q) * freqs
        return torch.view_as_real(rotated).flatten(1)

    nodes = graph(f, (1, 4), (6, 4), (1, 3))  # freqs as a real tensor: it only broadcasts
    flow = propagate(nodes["linear"], rows(6))
    assert labels_of(flow, nodes["view_as_complex"]) == [[0, 2, 4]]
    real = nodes["view_as_real"]
    assert labels_of(flow, real) == [[[0, 0], [2, 2], [4, 4]]]
    assert flow.components(6).tolist() == [0, 0, 2, 2, 4, 4]
    unmixed = propagate(nodes["linear"], rows(6), mixing=False).labels
    assert nodes["view_as_complex"] not in unmixed and real not in unmixed


def test_complex_from_a_real_and_an_imaginary_part_pairs_their_rows():
    def f(x, w):
        q = F.linear(x, w).view(1, 2, 2)  # rows (0, 1) and (2, 3) side by side
        return torch.view_as_real(torch.complex(q[..., 0], q[..., 1])).flatten(1)

    nodes = graph(f, (1, 4), (4, 4))
    flow = propagate(nodes["linear"], rows(4))
    assert labels_of(flow, nodes["complex_1"]) == [[0, 2]]
    assert labels_of(flow, nodes["flatten"]) == [[0, 0, 2, 2]]
    assert flow.components(4).tolist() == [0, 0, 2, 2]


def test_per_head_norm_keeps_each_element_row_only_when_mixing():
    def f(x, w, g):
        q = F.linear(x, w).view(1, 2, 2)
        return F.rms_norm(q, (2,), g).transpose(1, 2), F.layer_norm(q, (2,)).flatten()

    nodes = graph(f, (1, 4), (4, 4), (2,))
    norm = next(n for name, n in nodes.items() if "rms_norm" in name)
    flow = propagate(nodes["linear"], rows(4))
    assert labels_of(flow, norm) == [[[0, 1], [2, 3]]]
    transpose = next(n for n in norm.users if n.name.startswith("transpose"))
    assert labels_of(flow, transpose) == [[[0, 2], [1, 3]]]
    assert norm not in propagate(nodes["linear"], rows(4), mixing=False).labels


def test_a_norm_of_a_tuple_output_passes_its_labels_to_the_getitem():
    def f(x, w):
        q = F.linear(x, w).view(1, 2, 2)
        out, _, _ = torch.ops.aten.native_layer_norm(q, [2], None, None, 1e-5)
        return out.flatten()

    nodes = graph(f, (1, 4), (4, 4))
    flow = propagate(nodes["linear"], rows(4))
    assert labels_of(flow, nodes["getitem"]) == [[[0, 1], [2, 3]]]
    assert labels_of(flow, nodes["flatten"]) == [0, 1, 2, 3]


def test_a_norm_of_an_unlabelled_tensor_gets_no_labels():
    def f(x, w, other):
        h = F.linear(x, w)
        return F.rms_norm(other, (3,)) * h

    nodes = graph(f, (1, 3), (3, 3), (1, 3))
    norm = next(n for name, n in nodes.items() if "rms_norm" in name)
    assert norm not in propagate(nodes["linear"], rows(3)).labels


# ---- fresh tensors and writes ----------------------------------------------------------------
def test_rows_written_into_a_fresh_tensor_show_in_it():
    def f(x, w):
        k = F.linear(x, w)  # (1, 2)
        out = k.new_zeros(1, 4)
        out[:, 1:3] = k.flip(-1)
        return out.transpose(0, 1)

    nodes = graph(f, (1, 3), (2, 3))
    flow = propagate(nodes["linear"], rows(2))
    base = nodes["new_zeros"]
    assert labels_of(flow, base) == [[-1, 1, 0, -1]]
    assert flow.labels[base].dtype == torch.int32  # row numbers, as the start labels
    transpose = next(n for name, n in nodes.items() if name.startswith("transpose"))
    assert labels_of(flow, transpose) == [[-1], [1], [0], [-1]]


def test_cat_with_a_fresh_or_unlabelled_tensor():
    def f(x, w, other):
        k = F.linear(x, w)  # (1, 2)
        return torch.cat([torch.zeros(1, 1), k, other.view(1, 2)], dim=-1).flip(0)

    nodes = graph(f, (1, 3), (2, 3), (2,))
    flow = propagate(nodes["linear"], rows(2))
    assert labels_of(flow, nodes["cat"]) == [[-1, 0, 1, -1, -1]]
    assert flow.labels[nodes["cat"]].dtype == torch.int32
    assert labels_of(flow, nodes["flip"]) == [[-1, 0, 1, -1, -1]]


def test_slice_scatter_writes_rows_into_a_base_out_of_place():
    def f(x, w):
        k = F.linear(x, w)  # (1, 2)
        base = torch.zeros(1, 4)
        return torch.slice_scatter(base, k, dim=1, start=2, end=4).flip(-1)

    nodes = graph(f, (1, 3), (2, 3))
    flow = propagate(nodes["linear"], rows(2))
    assert labels_of(flow, nodes["slice_scatter"]) == [[-1, -1, 0, 1]]
    assert labels_of(flow, nodes["flip"]) == [[1, 0, -1, -1]]


def test_an_out_of_place_write_leaves_its_base_and_its_other_users_unlabelled():
    def f(x, w):
        k = F.linear(x, w)  # (1, 2)
        base = torch.zeros(1, 4)
        return torch.slice_scatter(base, k, dim=1, start=0, end=2), base.flip(-1)

    nodes = graph(f, (1, 3), (2, 3))
    flow = propagate(nodes["linear"], rows(2))
    assert labels_of(flow, nodes["slice_scatter"]) == [[0, 1, -1, -1]]
    assert nodes["flip"] not in flow.labels  # base itself holds no rows: nothing to follow


def test_index_put_with_a_data_dependent_index_ends_the_flow():
    def f(x, w, idx):
        k = F.linear(x, w)  # (2, 2)
        out = torch.zeros(4, 2)
        a = torch.index_put(out, [idx.long()], k)
        b = out.index_put_([idx.long()], k)
        return a.flip(0), b.flip(0)

    nodes = graph(f, (2, 3), (2, 3), (2,))
    flow = propagate(nodes["linear"], index_labels(nodes["linear"], -1))
    assert nodes["index_put"] not in flow.labels
    assert nodes["zeros"] not in flow.labels  # the in-place write did not label its base


def test_a_copy_taken_before_a_write_keeps_the_old_labels():
    def f(x, w):
        k = F.linear(x, w)  # (1, 4)
        out = k.new_zeros(1, 4)
        early = out.flip(-1)  # a copy of the base taken before the write
        out[:, :2].copy_(k[:, 2:])
        return early, out.flip(-1)

    nodes = graph(f, (1, 3), (4, 3))
    flow = propagate(nodes["linear"], rows(4))
    assert labels_of(flow, nodes["new_zeros"]) == [[2, 3, -1, -1]]
    assert labels_of(flow, nodes["flip"]) == [[-1, -1, -1, -1]]
    assert labels_of(flow, nodes["flip_1"]) == [[-1, -1, 3, 2]]


def test_a_write_into_a_tensor_the_rows_never_reached_queues_its_users():
    def f(x, w):
        k = F.linear(x, w)  # (1, 2)
        out = torch.zeros(3, 2)  # not computed from k: labelled when k is written into it
        out[1].copy_(k[0])
        return out.transpose(0, 1)

    nodes = graph(f, (1, 3), (2, 3))
    flow = propagate(nodes["linear"], rows(2))
    assert labels_of(flow, nodes["zeros"]) == [[-1, -1], [0, 1], [-1, -1]]
    transpose = next(n for name, n in nodes.items() if name.startswith("transpose"))
    assert labels_of(flow, transpose) == [[-1, 0, -1], [-1, 1, -1]]


@pytest.mark.parametrize("op", ["stack", "expand_as"])
def test_stack_or_expand_as_with_a_computed_operand_keeps_the_rows(op):
    """stack joins an unlabelled tensor as cat does (no row there); expand_as takes only the
    other tensor's shape. (Both used to end the flow.)"""

    def f(x, w):
        k = F.linear(x, w)  # (1, 2)
        other = torch.tanh(x[:, :2])
        moved = torch.stack([k, other]) if op == "stack" else k.expand_as(other.expand(3, 2))
        return moved.flip(0)

    nodes = graph(f, (1, 3), (2, 3))
    flow = propagate(nodes["linear"], rows(2))
    want = [[[-1, -1]], [[0, 1]]] if op == "stack" else [[0, 1]] * 3
    assert labels_of(flow, nodes["flip"]) == want


class ExpandAsGQA(nn.Module):
    """4 query heads of 4 and one key/value head, expanded to the query's shape with ``expand_as``."""

    def __init__(self):
        super().__init__()
        self.q = nn.Linear(16, 16, bias=False)
        self.k = nn.Linear(16, 4, bias=False)
        self.v = nn.Linear(16, 4, bias=False)

    def forward(self, x):
        B, T, _ = x.shape
        q = self.q(x).view(B, T, 4, 4).transpose(1, 2)
        k = self.k(x).view(B, T, 1, 4).transpose(1, 2).expand_as(q)
        v = self.v(x).view(B, T, 1, 4).transpose(1, 2).expand_as(q)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, 16)


def test_key_head_expanded_with_expand_as():
    """A GQA key written ``k.expand_as(q)`` is one head (it used to fall back to per-row blocks)."""
    plan = auto_partition(ExpandAsGQA(), (torch.zeros(2, 5, 16),))
    assert plan["k.weight"].layout == BlockLayout.rows(0, group=4)


# ---- limits ----------------------------------------------------------------------------------
def test_labels_past_the_size_limit_are_not_materialized(monkeypatch):
    def f(x):
        y = x * 2.0  # (1, 4)
        return y.expand(3, 4).flip(0), y.flip(-1)

    nodes = graph(f, (1, 4))
    monkeypatch.setattr(row_flow, "MAX_LABELS", 11)
    with pytest.warns(UserWarning) as caught:
        flow = propagate(nodes["mul"], rows(4))
    assert [str(w.message) for w in caught] == [
        "auto_partition: the row labels at expand exceed 11 elements, so attention heads past it "
        "are not followed (q/k may fall back to per-row blocks); trace with smaller example "
        "inputs, e.g. batch 1 and 16 tokens"
    ]
    assert nodes["expand"] not in flow.labels
    assert nodes["flip"] not in flow.labels
    assert labels_of(flow, nodes["flip_1"]) == [[3, 2, 1, 0]]
    # the parts of a split are checked too (the start labels are not: 12 elements)
    nodes_split = graph(lambda x: [t.flip(-1) for t in (x * 2.0).split(6, dim=-1)], (1, 12))
    monkeypatch.setattr(row_flow, "MAX_LABELS", 5)
    with pytest.warns(UserWarning, match="the row labels at split exceed 5 elements"):
        flow = propagate(nodes_split["mul"], rows(12))
    assert set(flow.labels) == {nodes_split["mul"]}
    monkeypatch.setattr(row_flow, "MAX_LABELS", 12)  # exactly 12 elements: materialized
    flow = propagate(nodes["mul"], rows(4))
    assert labels_of(flow, nodes["flip"]) == [[0, 1, 2, 3]] * 3


# ---- trace_rows and attention_fed ------------------------------------------------------------
def attention(x, w_qkv, w_o, cos, sin):
    """Fused q|k|v (8 + 4 + 4 rows), 2 query heads and 1 key/value head of 4, rotary on q and k."""
    qkv = F.linear(x, w_qkv)  # (1, 5, 16)
    q, k, v = qkv.split([8, 4, 4], dim=-1)
    q = q.view(1, 5, 2, 4).transpose(1, 2)
    k = k.view(1, 5, 1, 4).transpose(1, 2)
    v = v.view(1, 5, 1, 4).transpose(1, 2)
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    k, v = k.expand(1, 2, 5, 4), v.expand(1, 2, 5, 4)
    out = F.scaled_dot_product_attention(q, k, v)
    return F.linear(out.transpose(1, 2).reshape(1, 5, 8), w_o)


def attention_graph() -> tuple[dict[str, fx.Node], AttentionSite]:
    nodes = graph(attention, (1, 5, 8), (16, 8), (8, 8), (5, 4), (5, 4))
    sdpa = next(n for n in nodes.values() if "scaled_dot_product" in n.name)
    q, k, v = sdpa.args[:3]
    assert isinstance(q, fx.Node) and isinstance(k, fx.Node) and isinstance(v, fx.Node)
    return nodes, AttentionSite(q, k, v, sdpa)


def test_trace_rows_of_a_fused_projection_with_rotary():
    nodes, site = attention_graph()
    targets = trace_rows(nodes["linear"], -1, [site], nodes["output"])
    # rotary pairs row i with i + 2 inside each head: heads stay {0..3}, {4..7}, key {8..11}
    assert targets.query_heads == fs((0, 1, 2, 3), (4, 5, 6, 7))
    assert targets.key_heads == fs((8, 9, 10, 11))
    assert targets.value_rows == {12, 13, 14, 15}
    assert targets.reaches_output is False


def test_trace_rows_collects_the_heads_of_every_site():
    def f(x, w):  # one projection, q | k | v | u of 4 rows each, read by two attentions
        q, k, v, u = F.linear(x, w).view(1, 3, 4, 4).transpose(1, 2).unbind(1)  # each (1, 3, 4)
        first = F.scaled_dot_product_attention(q, k, v)
        second = F.scaled_dot_product_attention(k, q, u)  # q and k swap roles
        return first + second

    nodes = graph(f, (1, 3, 8), (16, 8))
    sites = []
    for sdpa in (n for n in nodes.values() if "scaled_dot_product" in n.name):
        q, k, v = sdpa.args[:3]
        assert isinstance(q, fx.Node) and isinstance(k, fx.Node) and isinstance(v, fx.Node)
        sites.append(AttentionSite(q, k, v, sdpa))
    assert len(sites) == 2
    targets = trace_rows(nodes["linear"], -1, sites, nodes["output"])
    assert targets.query_heads == fs((0, 1, 2, 3), (4, 5, 6, 7))
    assert targets.key_heads == fs((4, 5, 6, 7), (0, 1, 2, 3))
    assert targets.value_rows == {8, 9, 10, 11, 12, 13, 14, 15}


def test_trace_rows_of_an_output_projection_reaches_the_output():
    nodes, site = attention_graph()
    output_projection = nodes["linear_1"]
    targets = trace_rows(output_projection, -1, [site], nodes["output"])
    assert targets.reaches_output is True
    assert targets.query_heads == targets.key_heads == []
    assert targets.value_rows == set()


def test_trace_rows_reaches_the_output_through_data_movement_only():
    def head(x, w):  # logits reshaped and cast: the output is the projection's rows
        return F.linear(x, w).transpose(0, 1).reshape(-1).float()

    def mixed(x, w, y):  # a sum with another tensor: no longer "this projection's output"
        return (F.linear(x, w) + y).transpose(0, 1)

    nodes = graph(head, (2, 3), (4, 3))
    assert trace_rows(nodes["linear"], -1, [], nodes["output"]).reaches_output is True
    nodes = graph(mixed, (2, 3), (4, 3), (2, 4))
    assert trace_rows(nodes["linear"], -1, [], nodes["output"]).reaches_output is False


def test_trace_rows_of_a_scalar_output_is_empty():
    nodes = graph(lambda x: (x * 2.0).sum(), (2, 3))
    targets = trace_rows(nodes["sum_1"], 0, [], nodes["output"])
    assert (targets.query_heads, targets.key_heads, targets.value_rows, targets.reaches_output) == (
        [],
        [],
        set(),
        False,
    )


def test_attention_fed_holds_the_moved_attention_output_only():
    nodes, site = attention_graph()
    reached = attention_fed([site])
    # the attention output, its transpose(1, 2) and the reshape to (1, 5, 8); not the projection
    assert {n.name for n in reached} == {site.output.name, "transpose_3", "reshape"}
    assert nodes["linear_1"] not in reached


def test_attention_fed_stops_at_an_op_with_another_tensor():
    def f(q, k, v, gate):
        out = F.scaled_dot_product_attention(q, k, v)
        return (out * gate).transpose(1, 2), out.transpose(1, 2)

    nodes = graph(f, (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4))
    sdpa = next(n for n in nodes.values() if "scaled_dot_product" in n.name)
    site = AttentionSite(nodes["q_1"], nodes["k_1"], nodes["v_1"], sdpa)
    # the attention output and its transpose; not the gated product, nor what is moved after it
    assert {n.name for n in attention_fed([site])} == {sdpa.name, "transpose_1"}


def test_a_constant_pad_keeps_the_rows_and_any_other_pad_ends_them():
    def f(x, w):
        h = F.linear(x, w)
        pads = F.pad(h, (1, 1)), F.pad(h, (1, 1), mode="reflect"), torch.ops.aten.pad(h, [1, 1], "constant")
        return (*pads, torch.ops.aten.constant_pad_nd(h, [1, 1]))

    nodes = graph(f, (1, 3), (3, 3))
    assert nodes["pad_1"].args[2:] == ("reflect",)  # make_fx passes the mode by position
    nodes["pad_2"].args = (*nodes["pad_2"].args[:2], "constant")  # make_fx drops a default mode
    flow = propagate(nodes["linear"], rows(3))
    assert labels_of(flow, nodes["pad"]) == [[-1, 0, 1, 2, -1]]  # padding holds no row
    assert labels_of(flow, nodes["pad_2"]) == [[-1, 0, 1, 2, -1]]
    assert labels_of(flow, nodes["constant_pad_nd"]) == [[-1, 0, 1, 2, -1]]
    assert nodes["pad_1"] not in flow.labels  # reflected positions copy rows: not followed
    # the mode given by keyword, as another tracer may record it
    nodes["pad_1"].args, nodes["pad_1"].kwargs = nodes["pad_1"].args[:2], {"mode": "reflect"}
    assert nodes["pad_1"] not in propagate(nodes["linear"], rows(3)).labels


def test_an_index_computed_from_the_data_ends_the_rows():
    def f(x, w, s):
        return F.linear(x, w)[:, s.argmax(-1)]  # which row is picked depends on the values of s

    nodes = graph(f, (1, 3), (3, 3), (1, 3))
    assert "index" in nodes
    assert nodes["index"] not in propagate(nodes["linear"], rows(3)).labels


def test_a_transposed_depthwise_convolution_ends_the_rows():
    """A transposed conv spreads each input position over several outputs: not followed, however
    it is spelled (its weight (3, 1, 1) would otherwise pass for a depthwise conv's)."""

    def f(x, w, taps):
        h = F.linear(x, w).transpose(1, 2)  # (1, 3 rows, 2 positions)
        conv = torch.ops.aten.convolution(h, taps, None, [1], [0], [1], True, [0], 3)
        private = torch.ops.aten._convolution(
            h, taps, None, [1], [0], [1], True, [0], 3, False, False, False, False
        )
        plain = torch.ops.aten.convolution(h, taps, None, [1], [0], [1], False, [0], 3)
        return F.conv_transpose1d(h, taps, groups=3), conv, private, F.conv1d(h, taps, groups=3), plain

    nodes = graph(f, (1, 2, 4), (3, 4), (3, 1, 1))
    ops = {n: op_name(nodes[n]) for n in ("conv_transpose1d", "convolution", "_convolution", "conv1d")}
    assert ops == {n: n for n in ops}
    flow = propagate(nodes["linear"], torch.arange(3, dtype=torch.int32).expand(1, 2, 3))
    assert labels_of(flow, nodes["conv1d"]) == [[[0, 0], [1, 1], [2, 2]]]  # the plain depthwise conv
    assert labels_of(flow, nodes["convolution_1"]) == [[[0, 0], [1, 1], [2, 2]]]  # as aten.convolution
    assert not {nodes["conv_transpose1d"], nodes["convolution"], nodes["_convolution"]} & set(flow.labels)
