"""Prompt pieces: exact prefix text, one segment per prompt, the cue, dedupe, chat framing."""

from __future__ import annotations

import pytest

from selfensemble.data.base import Example
from selfensemble.engine.prompts import PromptFormat, build_parts, clean_prompts, default_format
from selfensemble.errors import SelfEnsembleError


@pytest.fixture
def tok(embedded_tokenizer):
    return embedded_tokenizer


def enc(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def test_prefix_text_exact(fewshot_fmt):
    assert fewshot_fmt.prefix_text() == (
        "Answer the question in a few words.\n\n"
        "Q: What is the capital of Italy?\nA: Rome\n\n"
        "Q: Who wrote the play Hamlet?\nA: William Shakespeare\n\n"
        "Q: What language do people speak in Brazil?\nA: Portuguese\n\n"
    )


def test_prefix_text_multi_phrasing_examples_and_no_instruction():
    fmt = PromptFormat(examples=(Example(("Capital of Peru?", "Peru's capital?"), "Lima"),))
    assert fmt.prefix_text() == "Q: Capital of Peru?\nQ: Peru's capital?\nA: Lima\n\n"
    assert PromptFormat().prefix_text() == ""
    assert PromptFormat(instruction="  ").prefix_text() == ""


def test_build_parts_pieces(tok, fewshot_fmt):
    prompts = ["What is the capital of France?", " Which city is France's capital? "]
    parts = build_parts(tok, fewshot_fmt, prompts)
    assert parts.prefix == enc(tok, fewshot_fmt.prefix_text())  # this tokenizer adds no BOS
    assert parts.segments == [enc(tok, "Q: What is the capital of France?\n"),
                              enc(tok, "Q: Which city is France's capital?\n")]
    assert parts.cue == enc(tok, "A:")
    assert parts.prompts == ["What is the capital of France?", "Which city is France's capital?"]
    assert parts.kept_indices == [0, 1] and parts.notes == []
    assert tok.decode(parts.full(1)) == fewshot_fmt.prefix_text() + "Q: Which city is France's capital?\nA:"


def test_build_parts_without_few_shot(tok):
    parts = build_parts(tok, PromptFormat(), ["Hi?"])
    assert parts.prefix == [] and tok.decode(parts.full(0)) == "Q: Hi?\nA:"


def test_default_format():
    fmt = default_format()
    assert fmt.instruction == "Answer the question in a few words." and len(fmt.examples) >= 2
    assert default_format(few_shot=False).examples == ()


def test_clean_prompts_dedupes_on_whitespace_normalised_text():
    with pytest.warns(UserWarning, match="dropped duplicate prompt 2"):
        kept, notes, idx = clean_prompts(["a b", "c", " a  b ", "d", "c"])
    assert kept == ["a b", "c", "d"] and idx == [0, 1, 3]
    assert notes == ["dropped duplicate prompt 2 (same as prompt 0): ' a  b '",
                     "dropped duplicate prompt 4 (same as prompt 1): 'c'"]


def test_clean_prompts_is_case_sensitive():
    kept, notes, _ = clean_prompts(["Paris?", "paris?"])
    assert kept == ["Paris?", "paris?"] and notes == []


@pytest.mark.parametrize("prompts, match", [([], "No prompts given"), (["ok", ""], "Prompt 1 is empty"),
                                            (["   "], "Prompt 0 is empty"), (["ok", None], "Prompt 1 is empty")])
def test_clean_prompts_rejects(prompts, match):
    with pytest.raises(SelfEnsembleError, match=match):
        clean_prompts(prompts)


def test_build_parts_records_dedupe(tok, fewshot_fmt):
    with pytest.warns(UserWarning):
        parts = build_parts(tok, fewshot_fmt, ["Q1?", "Q2?", "Q1?"])
    assert len(parts.segments) == 2 and parts.kept_indices == [0, 1]
    assert parts.notes and "dropped duplicate prompt 2" in parts.notes[0]


def test_chat_format(tok):
    fmt = PromptFormat(instruction="Answer briefly.", chat=True)
    parts = build_parts(tok, fmt, ["What is 2+2?", "Two plus two?"])
    prefix, cue = tok.decode(parts.prefix), tok.decode(parts.cue)
    assert prefix.startswith("<|im_start|>system") and prefix.endswith("<|im_start|>user\nAnswer briefly.\n\n")
    assert cue == "<|im_end|>\n<|im_start|>assistant\n"  # the default "A:" cue is dropped in chat mode
    assert tok.decode(parts.segments[1]) == "Q: Two plus two?\n"


def test_chat_without_template_is_an_error(tok):
    class NoTemplate:
        chat_template = None

    with pytest.raises(SelfEnsembleError, match="no chat_template"):
        build_parts(NoTemplate(), PromptFormat(chat=True), ["Hi?"])


def test_bos_opens_the_prefix_when_the_tokenizer_wants_one():
    class BosTokenizer:
        """Adds BOS (id 1) with special tokens; one id per character otherwise."""

        bos_token_id = 1

        def __call__(self, text, add_special_tokens=True):
            class Out:
                input_ids = ([1] if add_special_tokens else []) + [ord(c) for c in text]

            return Out()

    parts = build_parts(BosTokenizer(), PromptFormat(instruction="I"), ["x"])
    assert parts.prefix == [1, ord("I"), 10, 10]
    assert parts.segments == [[ord(c) for c in "Q: x\n"]]
    assert build_parts(BosTokenizer(), PromptFormat(), ["x"]).prefix == [1]
