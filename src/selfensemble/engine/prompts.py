"""Instruction, few-shot examples and paraphrases → token pieces: shared prefix | segments | cue.

Every method tokenises the same pieces and concatenates ids, so a one-prompt ``flex`` row and the
``origin`` row are the very same tokens. The answer cue (``A:`` or a chat template's assistant
header) is its own piece: attention fusion places it once, after all paraphrases, where it sees
them all.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

from selfensemble.data.base import Example, prompt_key
from selfensemble.errors import SelfEnsembleError

CHAT_PLACEHOLDER = "\x00SELFENSEMBLE_QUESTION\x00"


@dataclass(frozen=True)
class PromptFormat:
    """How a question is shown to the model.

    ``question_template`` wraps every prompt (paraphrase or few-shot question); ``cue`` follows once.
    With ``chat=True`` the tokenizer's chat template wraps the whole user turn and its assistant
    header becomes part of the cue.
    """

    instruction: str = ""
    examples: tuple[Example, ...] = ()
    question_template: str = "Q: {question}\n"
    answer_template: str = "A: {answer}\n\n"
    cue: str = "A:"
    chat: bool = False

    def prefix_text(self) -> str:
        parts = [self.instruction.strip() + "\n\n"] if self.instruction.strip() else []
        for ex in self.examples:
            parts += [self.question_template.format(question=p) for p in ex.prompts]
            parts.append(self.answer_template.format(answer=ex.answer))
        return "".join(parts)


@dataclass
class PromptParts:
    """Token ids of one query: ``prefix`` is shared by all prompts, one ``segment`` per prompt.

    ``cues``: one cue per prompt when prompts end differently (format variants: ``A:`` / ``Answer -``),
    else None and every prompt ends in ``cue``. Attention fusion places one cue after all segments:
    ``cue``, prompt 0's.
    """

    prefix: list[int]
    segments: list[list[int]]
    cue: list[int]
    prompts: list[str]
    notes: list[str] = field(default_factory=list)
    kept_indices: list[int] = field(default_factory=list)
    cues: list[list[int]] | None = None

    def cue_of(self, i: int) -> list[int]:
        """The cue prompt i ends with when asked alone."""
        return self.cues[i] if self.cues is not None else self.cue

    def full(self, i: int) -> list[int]:
        """Prompt i alone, as origin / per_prompt / logit fusion see it."""
        return self.prefix + self.segments[i] + self.cue_of(i)


def clean_prompts(prompts: list[str]) -> tuple[list[str], list[str], list[int]]:
    """Reject empty input, drop duplicates (keeping the first) and say which were dropped.

    Returns the kept prompts, one note per dropped duplicate, and the kept prompts' original indices.
    """
    if not prompts:
        raise SelfEnsembleError("No prompts given: pass a question (and optionally paraphrases).")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise SelfEnsembleError(f"Prompt {i} is empty or whitespace; every paraphrase needs text.")
    kept, notes, seen, indices = [], [], {}, []
    for i, p in enumerate(prompts):
        key = prompt_key(p)
        if key in seen:
            notes.append(f"dropped duplicate prompt {i} (same as prompt {seen[key]}): {p!r}")
            continue
        seen[key] = i
        kept.append(p.strip())
        indices.append(i)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return kept, notes, indices


def _adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    return tokenizer("a").input_ids[:1] == [bos] and tokenizer("a", add_special_tokens=False).input_ids[:1] != [bos]


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False).input_ids) if text else []


def _chat_frame(tokenizer) -> tuple[str, str]:
    if not getattr(tokenizer, "chat_template", None):
        raise SelfEnsembleError("This tokenizer has no chat_template; drop chat to use the Q:/A: format.", arguments=("chat",))
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": CHAT_PLACEHOLDER}], tokenize=False, add_generation_prompt=True
    )
    before, _, after = text.partition(CHAT_PLACEHOLDER)
    return before, after


def _frame(tokenizer, fmt: PromptFormat) -> tuple[list[int], list[int]]:
    """(prefix tokens, cue tokens) of one format: BOS (if the model wants one) opens the prefix."""
    prefix_text, cue_text = fmt.prefix_text(), fmt.cue
    if fmt.chat:
        before, after = _chat_frame(tokenizer)
        prefix_text = before + prefix_text
        cue_text = after + (fmt.cue if fmt.cue != "A:" else "")
    prefix = _encode(tokenizer, prefix_text)
    if _adds_bos(tokenizer) and not fmt.chat:
        prefix = [tokenizer.bos_token_id] + prefix
    return prefix, _encode(tokenizer, cue_text)


def build_parts(tokenizer, fmt: PromptFormat, prompts: list[str]) -> PromptParts:
    """Tokenise prefix, one segment per prompt, and the cue; BOS (if the model wants one) opens the prefix."""
    prompts, notes, kept = clean_prompts(list(prompts))
    prefix, cue = _frame(tokenizer, fmt)
    segments = [_encode(tokenizer, fmt.question_template.format(question=p)) for p in prompts]
    return PromptParts(prefix=prefix, segments=segments, cue=cue, prompts=prompts, notes=notes, kept_indices=kept)


def variant_key(fmt: PromptFormat, prompt: str) -> str:
    """What two (format, prompt) pairs are compared by: the whole text the model would read."""
    return prompt_key(f"{fmt.chat}|{fmt.prefix_text()}{fmt.question_template.format(question=prompt)}{fmt.cue}")


def clean_variants(fmts: Sequence[PromptFormat], prompts: Sequence[str]) -> tuple[list[int], list[str]]:
    """(kept indices, notes): a prompt whose whole text (its format included) repeats an earlier one
    is dropped, keeping the first; empty prompts are refused. Pure: runs call it to align records."""
    if len(fmts) != len(prompts) or not prompts:
        raise SelfEnsembleError(f"{len(fmts)} prompt formats for {len(prompts)} prompts; give one format per prompt.")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise SelfEnsembleError(f"Prompt {i} is empty or whitespace; every prompt needs text.")
    seen: dict[str, int] = {}
    kept, notes = [], []
    for i, (f, p) in enumerate(zip(fmts, prompts, strict=True)):
        key = variant_key(f, p.strip())
        if key in seen:
            notes.append(f"dropped duplicate prompt {i} (reads the same as prompt {seen[key]}): {p!r}")
            continue
        seen[key] = i
        kept.append(i)
    return kept, notes


def build_variant_parts(tokenizer, fmts: Sequence[PromptFormat], prompts: Sequence[str]) -> PromptParts:
    """Prompt i under its own format ``fmts[i]`` (demonstrations, surface, cue): one query's pieces.

    Each prompt alone is exactly ``build_parts(tokenizer, fmts[i], [prompts[i]]).full(0)``. What all
    prompts share at the start (BOS, the instruction, often more) becomes ``prefix``, encoded once
    (and kept in the KV cache); the rest of each prompt's own prefix opens its segment. Cutting a
    token list anywhere is exact for a causal model. Equal formats give ``build_parts``'s pieces.
    """
    kept, notes = clean_variants(fmts, prompts)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    framed = [_frame(tokenizer, fmts[i]) for i in kept]
    shared = _common_prefix([p for p, _ in framed])
    texts = [prompts[i].strip() for i in kept]
    segments = [p[len(shared):] + _encode(tokenizer, fmts[i].question_template.format(question=t))
                for (p, _), i, t in zip(framed, kept, texts, strict=True)]
    cues = [c for _, c in framed]
    return PromptParts(prefix=shared, segments=segments, cue=cues[0], prompts=texts, notes=notes, kept_indices=kept,
                       cues=None if all(c == cues[0] for c in cues) else cues)


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    """The longest token list every sequence starts with."""
    n = len(seqs[0])
    for s in seqs[1:]:
        n = next((i for i, (a, b) in enumerate(zip(seqs[0][:n], s, strict=False)) if a != b), min(n, len(s)))
    return seqs[0][:n]


# Generic few-shot demonstrations for ad-hoc questions (``selfensemble ask``): they teach the
# model the short "Q: … / A: …" answer format. Datasets bring their own.
DEFAULT_INSTRUCTION = "Answer the question in a few words."
DEFAULT_EXAMPLES: tuple[Example, ...] = (
    Example(("What is the capital of Germany?",), "Berlin"),
    Example(("Who wrote the play Hamlet?",), "William Shakespeare"),
    Example(("What language do people speak in Brazil?",), "Portuguese"),
    Example(("Which planet is closest to the sun?",), "Mercury"),
)


def default_format(few_shot: bool = True, chat: bool = False) -> PromptFormat:
    return PromptFormat(instruction=DEFAULT_INSTRUCTION, examples=DEFAULT_EXAMPLES if few_shot else (), chat=chat)
