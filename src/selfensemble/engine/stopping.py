"""Where an answer stops: stop strings, a newline after some text, and the incremental text they are checked on.

The decode loop asks after every chosen token whether the answer has ended. Decoding the whole
answer each step costs O(length) per step (O(length²) per answer); ``TextWatch`` instead decodes a
window of the last few tokens, the way streaming detokenizers do (vLLM, TGI): the text of
``tokens[prefix:]`` minus the text of ``tokens[prefix:read]``, so a tokenizer that strips a leading
space or merges bytes into one character still yields the same characters as decoding the whole.
A stop the watch finds is confirmed on the full decode once, so the watch can never end an answer
earlier than the full decode would.
"""

from __future__ import annotations

from typing import Protocol


class StopRules(Protocol):
    """The stop fields of config.generation.GenerationConfig (a Protocol: stopping needs only these)."""

    @property
    def stop_strings(self) -> tuple[str, ...]: ...

    @property
    def stop_after(self) -> tuple[str, ...]: ...

    @property
    def stop_at_newline(self) -> bool: ...

#: what ``tokenizer.decode`` gives for an incomplete UTF-8 sequence at the end of a window
PARTIAL = "\ufffd"


def stop_text(text: str, gen: StopRules) -> tuple[str, str | None]:
    """Cut the text at the first stop string (before it; after it for ``stop_after``), or at a newline
    once some text was produced. Returns (text up to the stop, "stop" | "newline" | None)."""
    cut, reason = len(text), None
    for s in gen.stop_strings:
        i = text.find(s)
        if 0 <= i < cut:
            cut, reason = i, "stop"
    for s in gen.stop_after:
        i = text.find(s)
        if i >= 0 and i + len(s) <= cut:
            cut, reason = i + len(s), "stop"
    if gen.stop_at_newline:
        lead = len(text) - len(text.lstrip())
        i = text.find("\n", lead)
        if 0 <= i < cut and text[:i].strip():
            cut, reason = i, "newline"
    return text[:cut], reason


def can_stop_on_text(gen: StopRules) -> bool:
    """False when no text rule is set (only EOS and length end the answer): no decoding is needed."""
    return bool(gen.stop_strings or gen.stop_after or gen.stop_at_newline)


class TextWatch:
    """One answer's text, grown by decoding only its newest tokens; says when a text rule stops it.

    ``text`` holds the characters of every complete token so far; a window ending in an incomplete
    UTF-8 sequence is checked but not committed until the next token completes it. Each ``push``
    decodes two windows of a few tokens, whatever the answer's length.
    """

    def __init__(self, tokenizer, gen: StopRules):
        self.tokenizer, self.gen = tokenizer, gen
        self.text = ""
        self.prefix = self.read = 0  # tokens[prefix:read] is the window already in ``text``
        self.exact = False  # set when a window disagreed with the full decode: decode in full from then on

    def _decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)

    def push(self, tokens: list[int]) -> str | None:
        """``tokens``: the whole answer so far, newest last. Returns the stop reason, or None."""
        if self.exact:
            return stop_text(self._decode(tokens), self.gen)[1]
        seen = self._decode(tokens[self.prefix:self.read]) if self.read > self.prefix else ""
        window = self._decode(tokens[self.prefix:])
        delta = window[len(seen):] if len(window) > len(seen) else ""
        current = self.text + delta
        if delta and not delta.endswith(PARTIAL):
            self.text, self.prefix, self.read = current, self.read, len(tokens)
        reason = stop_text(current, self.gen)[1]
        if reason is None:
            return None
        confirmed = stop_text(self._decode(tokens), self.gen)[1]  # never stop earlier than the full decode
        if confirmed is None:
            self.exact = True
        return confirmed
