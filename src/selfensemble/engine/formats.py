"""A small grammar of meaning-preserving prompt formats, in the spirit of FormatSpread (Sclar et al., 2024).

A format changes only the surface around the same content (instruction, demonstrations, question):

    question field   "Q" | "Question" | none       answer field (the cue's wording)   "A" | "Answer" | "Response"
    separator        ": " | " - " | newline         casing of the field names         as written | UPPER | lower
    field spacing    newline | space                example spacing                    blank line | newline

``FORMATS[0]`` is the format every run has always used (``Q: …`` / ``A: …``, blank line between
examples); the rest follow in a fixed, seeded order, so "format 7" names the same surface in every
run and ``--variants format`` with 5 values uses FORMATS[0:5]. Worked example, FORMATS[0] and a
"Question - / ANSWER -" format with newline fields and newline examples::

    Q: What is the capital of Italy?          QUESTION - What is the capital of Italy?
    A: Rome                                   ANSWER - Rome
                                              QUESTION - Who wrote Hamlet?
    Q: Who wrote Hamlet?                      ANSWER -
    A:
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace

from selfensemble.engine.prompts import PromptFormat

QUESTION_FIELDS = ("Q", "Question", "")
ANSWER_FIELDS = ("A", "Answer", "Response")
SEPARATORS = (": ", " - ", "\n")
CASINGS = ("as-is", "upper", "lower")
FIELD_SPACES = ("\n", " ")
EXAMPLE_SPACES = ("\n\n", "\n")
_ORDER_SEED = "selfensemble-formats-v1"  # fixes the order of FORMATS[1:]; changing it renames every format


@dataclass(frozen=True)
class FormatSpec:
    """One point of the grammar; ``templates()`` gives the PromptFormat fields it sets."""

    question_field: str = "Q"
    answer_field: str = "A"
    separator: str = ": "
    casing: str = "as-is"
    field_space: str = "\n"
    example_space: str = "\n\n"

    def _label(self, name: str) -> str:
        return {"upper": name.upper(), "lower": name.lower()}.get(self.casing, name)

    @property
    def question_prefix(self) -> str:
        """What stands before a question: ``"Q: "``, ``"QUESTION - "``, or "" (no field name)."""
        return self._label(self.question_field) + self.separator if self.question_field else ""

    @property
    def answer_prefix(self) -> str:
        return self._label(self.answer_field) + self.separator

    def templates(self) -> dict[str, str]:
        """{question_template, answer_template, cue} of engine.prompts.PromptFormat.

        The cue is the answer prefix without its trailing space (``"A:"``): the answer's first
        token carries the space, as in the demonstrations' ``"A: Rome"``.
        """
        return {"question_template": self.question_prefix + "{question}" + self.field_space,
                "answer_template": self.answer_prefix + "{answer}" + self.example_space,
                "cue": self.answer_prefix.rstrip(" ")}

    def describe(self) -> str:
        """A one-line picture, e.g. ``'Q: …⏎A: …⏎⏎'`` (⏎ = newline)."""
        t = self.templates()
        return (t["question_template"].replace("{question}", "…") + t["answer_template"].replace("{answer}", "…")
                ).replace("\n", "⏎")


def _grammar() -> tuple[FormatSpec, ...]:
    """Every distinct format (one casing of a one-letter field equals another), FORMATS[0] first."""
    seen, specs = set(), []
    for combo in itertools.product(QUESTION_FIELDS, ANSWER_FIELDS, SEPARATORS, CASINGS, FIELD_SPACES, EXAMPLE_SPACES):
        spec = FormatSpec(*combo)
        key = tuple(spec.templates().values())
        if key not in seen:
            seen.add(key)
            specs.append(spec)
    base, rest = specs[0], specs[1:]
    random.Random(_ORDER_SEED).shuffle(rest)
    return (base, *rest)


FORMATS: tuple[FormatSpec, ...] = _grammar()
assert FORMATS[0] == FormatSpec(), "FORMATS[0] must be the default Q:/A: format"


def apply_format(fmt: PromptFormat, spec: FormatSpec) -> PromptFormat:
    """``fmt`` (instruction, demonstrations, chat) rendered under ``spec``'s surface."""
    t = spec.templates()
    return replace(fmt, question_template=t["question_template"], answer_template=t["answer_template"], cue=t["cue"])


def parse_rendered(text: str, spec: FormatSpec, has_instruction: bool) -> dict:
    """Recover {instruction, examples: [(question, answer)], question} from one prompt's text
    (``prefix_text() + question_template.format(question) + cue``) rendered under ``spec``.

    The inverse of the rendering, written separately (regular expressions over the spec's pieces),
    so a test can check that every format carries the same content. A text that does not parse is a
    ValueError naming where it stopped.
    """
    t = spec.templates()
    if not text.endswith(t["cue"]):
        raise ValueError(f"text does not end with the cue {t['cue']!r}")
    body = text[: len(text) - len(t["cue"])]
    instruction = ""
    if has_instruction:
        instruction, sep, body = body.partition("\n\n")
        if not sep:
            raise ValueError("no blank line after the instruction")
    q, fs, a, es = map(re.escape, (spec.question_prefix, spec.field_space, spec.answer_prefix, spec.example_space))
    example = re.compile(f"{q}(?P<q>.+?){fs}{a}(?P<a>.+?){es}", re.DOTALL)
    examples, pos = [], 0
    while (m := example.match(body, pos)) is not None:
        examples.append((m["q"], m["a"]))
        pos = m.end()
    last = re.fullmatch(f"{q}(?P<q>.+?){fs}", body[pos:], re.DOTALL)
    if last is None:
        raise ValueError(f"cannot read the question at {body[pos:]!r}")
    return {"instruction": instruction, "examples": examples, "question": last["q"]}
