"""Packing: segment ids, position modes, left padding, next positions."""

from __future__ import annotations

import pytest
import torch

from selfensemble.engine.packing import CUE, PAD, SHARED, PackedBatch, Row, pack_row


def test_docstring_worked_example():
    # prefix of 2 tokens kept in the KV cache, segments of lengths 3 and 2, a 1-token cue, restart
    row = pack_row([], [[11, 12, 13], [21, 22]], [99], start=2, positions="restart")
    assert row.tokens == [11, 12, 13, 21, 22, 99]
    assert row.segments == [1, 1, 1, 2, 2, -1]
    assert row.positions == [2, 3, 4, 2, 3, 5]
    assert row.next_position == 6


def test_shared_tokens_in_row():
    row = pack_row([1, 2], [[3, 4, 5], [6]], [7, 8])
    assert row.tokens == [1, 2, 3, 4, 5, 6, 7, 8]
    assert row.segments == [SHARED, SHARED, 1, 1, 1, 2, CUE, CUE]
    assert row.positions == [0, 1, 2, 3, 4, 2, 5, 6]
    assert row.next_position == 7


def test_positions_right_align_segments_next_to_the_cue():
    row = pack_row([1], [[3, 4, 5], [6], [7, 8]], [9], start=10, positions="right")
    assert row.segments == [SHARED, 1, 1, 1, 2, 3, 3, CUE]
    # shared at 10; longest segment 3 → segments end at 13, cue at 14
    assert row.positions == [10, 11, 12, 13, 13, 12, 13, 14]
    assert row.next_position == 15


def test_positions_sequential_are_ordinary_running_positions():
    row = pack_row([1], [[3, 4, 5], [6], [7, 8]], [9, 10], start=4, positions="sequential")
    assert row.positions == list(range(4, 4 + 9))
    assert row.next_position == 13


def test_single_segment_is_the_plain_prompt_in_every_mode():
    for mode in ("restart", "right", "sequential"):
        row = pack_row([1, 2], [[3, 4]], [5], positions=mode)
        assert row.positions == [0, 1, 2, 3, 4], mode


def test_empty_cue_allowed_and_empty_segment_rejected():
    row = pack_row([], [[1, 2], [3]], [])
    assert row.segments == [1, 1, 2] and row.positions == [0, 1, 0] and row.next_position == 2
    with pytest.raises(ValueError, match="at least one token"):
        pack_row([], [[1], []], [5])
    with pytest.raises(ValueError, match="at least one token"):
        pack_row([], [], [5])


def test_unknown_position_mode():
    with pytest.raises(ValueError, match="positions must be one of"):
        pack_row([], [[1]], [2], positions="left")


def test_next_position_of_empty_row():
    assert Row([], [], []).next_position == 0


def test_from_rows_left_pads():
    a = pack_row([], [[1, 2, 3]], [4], start=5)  # 4 tokens, positions 5..8
    b = pack_row([], [[6]], [7], start=5)  # 2 tokens
    batch = PackedBatch.from_rows([a, b], prefix_len=5, pad_id=0)
    assert batch.shape == (2, 4)
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [0, 0, 6, 7]]
    assert batch.segment_ids.tolist() == [[1, 1, 1, CUE], [PAD, PAD, 1, CUE]]
    assert batch.position_ids.tolist() == [[5, 6, 7, 8], [0, 0, 5, 6]]
    assert batch.next_position.tolist() == [9, 7]
    assert batch.prefix_len == 5
    assert batch.input_ids.dtype == torch.long


@pytest.mark.parametrize("longest, multiple, want", [(5, 1, 5), (5, 4, 8), (8, 4, 8), (33, 32, 64), (2, 32, 32)])
def test_from_rows_rounds_length_up(longest, multiple, want):
    row = pack_row([], [list(range(1, longest))], [99])
    batch = PackedBatch.from_rows([row], pad_id=42, multiple_of=multiple)
    assert batch.shape == (1, want)
    pad = want - longest
    assert batch.input_ids[0, :pad].tolist() == [42] * pad
    assert batch.segment_ids[0, :pad].tolist() == [PAD] * pad
    assert batch.input_ids[0, pad:].tolist() == row.tokens


def test_from_rows_needs_rows():
    with pytest.raises(ValueError, match="no rows"):
        PackedBatch.from_rows([])
