"""Find the question inside an lm-evaluation-harness prompt and cut it into prefix | question | cue.

A harness context is one string: task description, few-shot examples, then the test question and
an answer cue, e.g.

    "Question: Who wrote Hamlet?\\nAnswer: Shakespeare\\n\\nQuestion: Where is Rome?\\nAnswer:"

The rule, in order (``split_context``):

1. The context must END with an answer-cue line: ``Answer:`` or ``A:`` (any case, trailing spaces
   allowed) on its own line. Otherwise no question is isolated.
2. The question is the LAST line before that cue that starts with a question label,
   ``Question:`` or ``Q:`` (any case), found after the last few-shot answer. Its text runs from
   after the label to the end of that line.
3. Without a label: if two or more option lines (``A. …``, ``B) …``) stand right before the cue,
   the question is the block between the last blank line and the first option (MMLU style, may
   span lines); else the line right before the cue, if it ends with ``?``
   (e.g. ``"Who wrote Hamlet?\\nAnswer:"``).

The pieces, in characters (they concatenate back to the context exactly):

    prefix   everything before the question line (description + few-shot): shared by all prompts
    segment  label + question text + the line end, e.g. "Question: Where is Rome?\\n";
             a paraphrase p becomes label + p + the same line end
    cue      everything after the question line, e.g. "Answer:" (or option lines + "Answer:"):
             one shared cue, after all paraphrases for ``flex``, after each one for logit fusion

A context where no question is isolated (no cue at the end, no labelled or "?"-ending question
line, e.g. a passage-completion task) is answered from the whole context without paraphrases;
the adapter counts these contexts and reports them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

CUE_LINE = re.compile(r"(?:^|\n)([ \t]*(?:answer|a)[ \t]*:[ \t]*)$", re.IGNORECASE)
OPTION_LINE = re.compile(r"^[ \t]*[A-J][.)][ \t]")
QUESTION_LINE = re.compile(r"^([ \t]*(?:question|q)[ \t]*:[ \t]*)(.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class ContextSplit:
    """Character spans of one harness context: ``context == prefix + label + question + line_end + cue``."""

    prefix: str
    label: str
    question: str
    line_end: str
    cue: str

    def segment(self, question: str | None = None) -> str:
        """The question line for the original (None) or for a paraphrase."""
        return self.label + (self.question if question is None else question) + self.line_end


def _options_start(body: str) -> int | None:
    """Where a run of >= 2 option lines ("A. …", "B) …") ending right before the cue begins, else None."""
    lines = body[:-1].split("\n")
    n = 0
    while n < len(lines) and OPTION_LINE.match(lines[len(lines) - 1 - n]):
        n += 1
    if n < 2 or n == len(lines):
        return None
    return len("\n".join(lines[: len(lines) - n])) + 1


def split_context(context: str) -> ContextSplit | None:
    """Cut ``context`` into prefix | question line | cue by the rules in the module docstring, or None."""
    cue_match = CUE_LINE.search(context)
    if cue_match is None:
        return None
    cue_start = cue_match.start(1)
    body = context[:cue_start]  # ends with the newline before the cue (or is empty)
    if not body.endswith("\n"):
        return None
    labelled = [m for m in QUESTION_LINE.finditer(body) if m.group(2).strip()]
    if labelled:
        q = labelled[-1]
        start, text_start, text_end = q.start(), q.start(2), q.end(2)
        label = context[start:text_start]
    elif (options := _options_start(body)) is not None:  # unlabelled, then option lines (MMLU style)
        start = body.rfind("\n\n", 0, options) + 2 if "\n\n" in body[:options] else 0
        label, text_start = "", start
        text_end = options - 1  # the question block may span lines; its last newline ends the segment
    else:  # unlabelled: the line right before the cue, if it is a question
        start = body.rfind("\n", 0, len(body) - 1) + 1
        line = body[start:-1]
        if not line.strip().endswith("?"):
            return None
        text_start, text_end = start + len(line) - len(line.lstrip()), start + len(line.rstrip())
        label = context[start:text_start]  # its indentation, if any
    question = context[text_start:text_end]
    line_end_stop = body.find("\n", text_end) + 1  # the question line's own newline
    if not question.strip():
        return None
    return ContextSplit(prefix=context[:start], label=label, question=question,
                        line_end=context[text_end:line_end_stop], cue=context[line_end_stop:])
