"""BlockLayout and Segment, each result written out by hand: block of every row, v shapes, reduced
axes, block counts, validation boundaries, table text and plain-data form."""

from __future__ import annotations

import pytest

from partitioners import BlockLayout, Segment

# Layouts are built inside the tests (parameters are factories): mutmut attributes a call to the
# test that makes it, so a layout built at import time would hide constructor mutants.


def qkv() -> BlockLayout:  # 32 rows: 4 + 2 + 8 blocks
    return BlockLayout.segmented([(16, 4, "q"), (8, 4, "k"), (8, 1, "v")])


def interleaved() -> BlockLayout:  # 12 columns
    return BlockLayout.segmented([(4, 2, "q"), (2, 1, "v")], axis=1, repeat=2)


def experts() -> BlockLayout:  # (experts, out, in)
    return BlockLayout.rows(1, batch_axes=(0,))


# ---- Segment -------------------------------------------------------------------------------
@pytest.mark.parametrize("length, block, blocks", [(4, 4, 1), (4, 1, 4), (6, 2, 3), (1, 1, 1)])
def test_segment_block_count(length, block, blocks):
    assert Segment(length, block).num_blocks == blocks


@pytest.mark.parametrize("length, block", [(0, 1), (4, 0), (-4, 2), (4, -2), (6, 4), (2, 4)])
def test_segment_rejects_lengths_that_are_not_positive_multiples(length, block):
    with pytest.raises(
        ValueError,
        match=rf"^Segment\(length={length}, block={block}\): length must be a positive multiple of block$",
    ):
        Segment(length, block)


def test_segment_defaults():
    assert Segment(3) == Segment(3, 1, "")


# ---- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        {"axis": 1},
        {"batch_axes": (0,)},
        {"group": 2},
        {"segments": (Segment(2),)},
        {"repeat": 2},
    ],
)
@pytest.mark.parametrize("kind", ["tensor", "element"])
def test_tensor_and_element_layouts_take_no_row_fields(kind, kwargs):
    with pytest.raises(ValueError, match=f"^a '{kind}' layout takes no axis, group or segments$"):
        BlockLayout(kind, **kwargs)


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="^unknown layout kind 'heads': use tensor, element or rows$"):
        BlockLayout("heads")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"group": 0}, {"group": -1}, {"repeat": 0}, {"repeat": -2}])
def test_group_and_repeat_must_be_positive(kwargs):
    with pytest.raises(ValueError, match="^group and repeat must be positive$"):
        BlockLayout("rows", **kwargs)


def test_group_and_segments_exclude_each_other():
    with pytest.raises(ValueError, match="^give either group or segments, not both$"):
        BlockLayout("rows", group=2, segments=(Segment(4, 2),))


@pytest.mark.parametrize("axis, batch_axes", [(0, (0,)), (1, (0, 1)), (0, (1, 1)), (2, (0, 0))])
def test_batch_axes_distinct_from_each_other_and_the_row_axis(axis, batch_axes):
    with pytest.raises(ValueError, match=r"^batch_axes \(.*\) must be distinct from axis \d$"):
        BlockLayout.rows(axis, batch_axes=batch_axes)


def test_smallest_valid_rows_fields_are_accepted():
    layout = BlockLayout("rows", axis=1, batch_axes=(0, 2), group=1, repeat=1)
    assert (layout.axis, layout.batch_axes, layout.group, layout.repeat) == (1, (0, 2), 1, 1)


# ---- check against a shape ------------------------------------------------------------------
@pytest.mark.parametrize(
    "make_layout, shape",
    [
        (lambda: BlockLayout.rows(1), (3, 4)),
        (lambda: BlockLayout.rows(2, batch_axes=(0, 1)), (2, 3, 4)),
        (lambda: BlockLayout.rows(0, group=4), (8, 2)),
        (qkv, (32, 16)),
        (interleaved, (5, 12)),
        (lambda: BlockLayout.tensor(), (7, 3, 2)),
        (lambda: BlockLayout.element(), ()),
    ],
)
def test_shapes_that_fit(make_layout, shape):
    layout = make_layout()
    layout.check(shape)


@pytest.mark.parametrize(
    "make_layout, shape, message",
    [
        (lambda: BlockLayout.rows(2), (3, 4), r"axis 2 is out of range for a 2-D tensor \(3, 4\)"),
        (
            lambda: BlockLayout.rows(0, batch_axes=(1,)),
            (3,),
            r"axis 1 is out of range for a 1-D tensor \(3,\)",
        ),
        (lambda: BlockLayout.rows(0), (), r"axis 0 is out of range for a 0-D tensor \(\)"),
        (lambda: BlockLayout.rows(0, group=4), (10, 2), "10 rows along axis 0 don't split into groups of 4"),
        (qkv, (31, 16), "segments cover 32 rows along axis 0, the tensor has 31"),
        (qkv, (33, 16), "segments cover 32 rows along axis 0, the tensor has 33"),
        (interleaved, (5, 6), "segments cover 12 rows along axis 1, the tensor has 6"),
    ],
)
def test_shapes_that_do_not_fit(make_layout, shape, message):
    layout = make_layout()
    with pytest.raises(ValueError, match=f"^{message}$"):
        layout.check(shape)


# ---- geometry --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make_layout, shape, row_block",
    [
        (lambda: BlockLayout.rows(0, group=4), (8, 3), [0, 0, 0, 0, 1, 1, 1, 1]),
        (lambda: BlockLayout.rows(1, group=3), (2, 6), [0, 0, 0, 1, 1, 1]),
        (lambda: BlockLayout.rows(0, group=5), (5,), [0, 0, 0, 0, 0]),
        (
            lambda: BlockLayout.segmented([(4, 4, "q"), (2, 2, "k"), (4, 1, "v")]),
            (10, 2),
            [0, 0, 0, 0, 1, 1, 2, 3, 4, 5],
        ),
        (
            lambda: BlockLayout.segmented([(2, 1, "v"), (4, 2, "q")]),
            (6, 2),
            [0, 1, 2, 2, 3, 3],
        ),
        (interleaved, (5, 12), [0, 0, 1, 1, 2, 3, 4, 4, 5, 5, 6, 7]),
        (lambda: BlockLayout.segmented([(3, 1)], repeat=2), (6,), [0, 1, 2, 3, 4, 5]),
    ],
)
def test_block_of_every_row(make_layout, shape, row_block):
    layout = make_layout()
    assert layout.row_to_block(shape) == row_block


@pytest.mark.parametrize(
    "make_layout",
    [
        lambda: BlockLayout.rows(0),
        lambda: BlockLayout.rows(1, batch_axes=(0,)),
        lambda: BlockLayout.tensor(),
        lambda: BlockLayout.element(),
    ],
)
def test_no_row_index_when_each_row_is_a_block_or_rows_do_not_apply(make_layout):
    layout = make_layout()
    assert layout.row_to_block((4, 6, 2)) is None


@pytest.mark.parametrize(
    "make_layout, shape, v_shape, reduce_dims, blocks_along_axis, num_blocks",
    [
        (lambda: BlockLayout.tensor(), (3, 4), (1, 1), (0, 1), None, 1),
        (lambda: BlockLayout.tensor(), (5,), (1,), (0,), None, 1),
        (lambda: BlockLayout.element(), (3, 4), (3, 4), (), None, 12),
        (lambda: BlockLayout.element(), (2, 3, 4), (2, 3, 4), (), None, 24),
        (lambda: BlockLayout.rows(0), (6, 5), (6, 1), (1,), 6, 6),
        (lambda: BlockLayout.rows(1), (6, 5), (1, 5), (0,), 5, 5),
        (lambda: BlockLayout.rows(0, group=2), (6, 5), (3, 1), (1,), 3, 3),
        (lambda: BlockLayout.rows(0), (7,), (7,), (), 7, 7),
        (experts, (4, 6, 5), (4, 6, 1), (2,), 6, 24),
        (lambda: BlockLayout.rows(2, batch_axes=(0,)), (4, 5, 6), (4, 1, 6), (1,), 6, 24),
        (lambda: BlockLayout.rows(1, group=3, batch_axes=(0, 2)), (2, 6, 5, 7), (2, 2, 5, 1), (3,), 2, 20),
        (qkv, (32, 16), (14, 1), (1,), 14, 14),
        (interleaved, (5, 12), (1, 8), (0,), 8, 8),
        (
            lambda: BlockLayout.segmented([(4, 2), (2, 1)], axis=1, repeat=2, batch_axes=(0,)),
            (3, 12, 5),
            (3, 8, 1),
            (2,),
            8,
            24,
        ),
    ],
)
def test_geometry(make_layout, shape, v_shape, reduce_dims, blocks_along_axis, num_blocks):
    layout = make_layout()
    assert layout.v_shape(shape) == v_shape
    assert layout.reduce_dims(len(shape)) == reduce_dims
    assert layout.num_blocks(shape) == num_blocks
    if blocks_along_axis is not None:
        assert layout.blocks_along_axis(shape) == blocks_along_axis


# ---- text and plain data ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "make_layout, text",
    [
        (lambda: BlockLayout.tensor(), "tensor"),
        (lambda: BlockLayout.element(), "element"),
        (lambda: BlockLayout.rows(0), "rows(dim=0)"),
        (lambda: BlockLayout.rows(1), "rows(dim=1)"),
        (lambda: BlockLayout.rows(0, group=4), "heads(dim=0, size=4)"),
        (experts, "rows(dims=0,1)"),
        (lambda: BlockLayout.rows(2, group=2, batch_axes=(0, 1)), "heads(dims=0,1,2, size=2)"),
        (qkv, "segments(dim=0, (q:16/4 + k:8/4 + v:8/1))"),
        (interleaved, "segments(dim=1, (q:4/2 + v:2/1) x2)"),
        (lambda: BlockLayout.segmented([(4, 2), (2, 1)]), "segments(dim=0, (4/2 + 2/1))"),
        (lambda: BlockLayout.segmented([(4, 4)], axis=1, batch_axes=(0,)), "segments(dims=0,1, (4/4))"),
    ],
)
def test_table_text(make_layout, text):
    layout = make_layout()
    assert str(layout) == text


@pytest.mark.parametrize(
    "make_layout, data",
    [
        (lambda: BlockLayout.tensor(), {"kind": "tensor"}),
        (lambda: BlockLayout.element(), {"kind": "element"}),
        (lambda: BlockLayout.rows(0), {"kind": "rows", "axis": 0}),
        (lambda: BlockLayout.rows(1, group=2), {"kind": "rows", "axis": 1, "group": 2}),
        (experts, {"kind": "rows", "axis": 1, "batch_axes": [0]}),
        (
            interleaved,
            {"kind": "rows", "axis": 1, "segments": [[4, 2, "q"], [2, 1, "v"]], "repeat": 2},
        ),
        (
            lambda: BlockLayout.segmented([(4, 2), (2, 1, "v")]),
            {"kind": "rows", "axis": 0, "segments": [[4, 2], [2, 1, "v"]]},
        ),
    ],
)
def test_plain_data_lists_only_fields_that_differ_from_the_defaults(make_layout, data):
    layout = make_layout()
    assert layout.to_dict() == data
    assert BlockLayout.from_dict(data) == layout


def test_from_dict_fills_defaults_and_converts_types():
    assert BlockLayout.from_dict({"kind": "rows"}) == BlockLayout.rows(0)
    got = BlockLayout.from_dict(
        {"kind": "rows", "axis": "1", "batch_axes": ["0"], "group": "2", "repeat": "1"}
    )
    assert got == BlockLayout.rows(1, group=2, batch_axes=(0,))
    assert type(got.axis) is int and type(got.group) is int and type(got.batch_axes[0]) is int
    seg = BlockLayout.from_dict({"kind": "rows", "segments": [[2, 2, "k"]], "repeat": 3})
    assert seg.segments == (Segment(2, 2, "k"),) and seg.repeat == 3


def test_from_dict_names_unknown_fields():
    with pytest.raises(ValueError, match=r"^unknown layout fields \['axes', 'size'\] in \{"):
        BlockLayout.from_dict({"kind": "rows", "size": 2, "axes": 1})


def test_layouts_are_hashable_values():
    assert {BlockLayout.rows(0, group=2): "a"}[BlockLayout.rows(0, group=2)] == "a"
    assert BlockLayout.rows(0, group=2) != BlockLayout.rows(0, group=4)
    assert BlockLayout.segmented([Segment(4, 2), (2, 1)]).segments == (Segment(4, 2), Segment(2, 1))


def test_constructor_defaults():
    """rows(): dim 0, one block per row, no batch axes; segmented(): dim 0, not repeated."""
    assert BlockLayout.rows() == BlockLayout("rows", axis=0, batch_axes=(), group=1)
    assert BlockLayout.segmented([(2, 1)]) == BlockLayout("rows", axis=0, segments=(Segment(2, 1),), repeat=1)
