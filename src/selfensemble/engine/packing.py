"""Rows of segments → one left-padded batch: token ids, segment ids, position ids.

Segment ids say who may see whom (see masks.py):
  SHARED (0)  instruction / few-shot inside the row: seen by every later token
  1..N        paraphrase segments: seen only by themselves (and by fusion tokens)
  CUE (-1)    the shared answer cue: sees everything before it, is seen by everything after
  PAD (-2)    left padding: sees only itself, seen by nobody

Worked example: a shared prefix of 2 tokens kept in the KV cache (prefix_len=2), then segments of
lengths 3 and 2 and a 1-token cue, positions "restart":
  segment ids  [1, 1, 1, 2, 2, -1]
  positions    [2, 3, 4, 2, 3, 5]     (each paraphrase starts after the prefix; cue after the longest)
  next position for generation: 6
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from selfensemble.config.defaults import POSITION_MODES

SHARED, CUE, PAD = 0, -1, -2


@dataclass
class Row:
    """One sequence of the batch before padding."""

    tokens: list[int]
    segments: list[int]
    positions: list[int]

    @property
    def next_position(self) -> int:
        return max(self.positions) + 1 if self.positions else 0


def pack_row(shared: list[int], segments: list[list[int]], cue: list[int], start: int = 0,
             positions: str = "restart") -> Row:
    """Lay out [shared | seg_1 … seg_N | cue], positions starting at ``start`` (the cached prefix length).

    ``restart``: every segment starts at the same position; ``right``: segments are shifted so they
    all end at the same position, next to the cue; ``sequential``: ordinary running positions.
    """
    if positions not in POSITION_MODES:
        raise ValueError(f"positions must be one of {POSITION_MODES}, got {positions!r}")
    if not segments or any(len(s) == 0 for s in segments):
        raise ValueError("every segment needs at least one token")
    tokens, seg_ids, pos = list(shared), [SHARED] * len(shared), list(range(start, start + len(shared)))
    base = start + len(shared)
    longest = max(len(s) for s in segments)
    cursor = base
    for k, seg in enumerate(segments, start=1):
        if positions == "restart":
            first = base
        elif positions == "right":
            first = base + longest - len(seg)
        else:
            first = cursor
        tokens += seg
        seg_ids += [k] * len(seg)
        pos += list(range(first, first + len(seg)))
        cursor += len(seg)
    cue_start = cursor if positions == "sequential" else base + longest
    tokens += cue
    seg_ids += [CUE] * len(cue)
    pos += list(range(cue_start, cue_start + len(cue)))
    return Row(tokens, seg_ids, pos)


@dataclass
class PackedBatch:
    """Left-padded tensors of B rows; ``prefix_len`` tokens of shared KV sit before every row."""

    input_ids: torch.Tensor  # (B, L)
    segment_ids: torch.Tensor  # (B, L); PAD where padded
    position_ids: torch.Tensor  # (B, L)
    next_position: torch.Tensor  # (B,) position of the first generated token
    prefix_len: int
    prefix_segments: torch.Tensor | None = None  # (prefix_len,) segment id per cached slot; None = SHARED

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.input_ids.shape)

    @classmethod
    def from_rows(cls, rows: list[Row], prefix_len: int = 0, pad_id: int = 0, multiple_of: int = 1,
                  device: torch.device | str = "cpu", prefix_segments: list[int] | None = None) -> PackedBatch:
        """Left-pad to the longest row, rounded up to ``multiple_of`` (few distinct shapes → few compiles)."""
        if not rows:
            raise ValueError("no rows to pack")
        longest = max(len(r.tokens) for r in rows)
        length = -(-longest // multiple_of) * multiple_of
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        seg = torch.full((len(rows), length), PAD, dtype=torch.long)
        pos = torch.zeros((len(rows), length), dtype=torch.long)
        for b, r in enumerate(rows):
            n = len(r.tokens)
            ids[b, length - n:] = torch.tensor(r.tokens)
            seg[b, length - n:] = torch.tensor(r.segments)
            pos[b, length - n:] = torch.tensor(r.positions)
        nxt = torch.tensor([r.next_position for r in rows], dtype=torch.long)
        pseg = None
        if prefix_segments is not None:
            if len(prefix_segments) != prefix_len:
                raise ValueError(f"{len(prefix_segments)} prefix segment ids for a prefix of {prefix_len}")
            pseg = torch.tensor(prefix_segments, dtype=torch.long, device=device)
        return cls(ids.to(device), seg.to(device), pos.to(device), nxt.to(device), prefix_len, pseg)
