"""TextWatch (incremental detokenization for stop checks) against decoding the whole answer each step.

The reference is the rule the decode loop used before: after every token, decode all of the
answer's tokens and apply stop_text. The watch must stop at exactly the same step with the same
reason, on a byte-level BPE tokenizer (the embedded SmolLM2's) and on a SentencePiece-style one
(leading-space marker, byte fallback, a stripped first space: Llama's decoder).
"""

from __future__ import annotations

import random

import pytest

from selfensemble.config.generation import GenerationConfig
from selfensemble.engine.stopping import TextWatch, can_stop_on_text, stop_text

RULES = [
    GenerationConfig(),
    GenerationConfig(stop_after=("?",)),
    GenerationConfig(stop_strings=("Q:", "\n\n"), stop_at_newline=False),
    GenerationConfig(stop_strings=("é",), stop_after=("€",)),
]


def first_stop_full(tokenizer, tokens: list[int], gen: GenerationConfig) -> tuple[int, str] | None:
    for n in range(1, len(tokens) + 1):
        reason = stop_text(tokenizer.decode(tokens[:n], skip_special_tokens=True), gen)[1]
        if reason:
            return n, reason
    return None


def first_stop_watch(tokenizer, tokens: list[int], gen: GenerationConfig):
    watch = TextWatch(tokenizer, gen)
    for n in range(1, len(tokens) + 1):
        reason = watch.push(tokens[:n])
        if reason:
            return n, reason
    return None


def sentencepiece_tokenizer():
    """A tiny Llama-style tokenizer: '▁' marks a space, <0xNN> byte tokens, the first space stripped."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = ["<unk>", "</s>", "▁Paris", "▁is", "▁the", "?", "▁capital", "Q", ":", "▁Q", "▁", "é", "▁caf", ".",
              *[f"<0x{b:02X}>" for b in range(256)]]
    vocab = {p: i for i, p in enumerate(pieces)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1, right=0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def random_answers(tokenizer, interesting: list[str], n: int, seed: int) -> list[list[int]]:
    """Answers mixing ordinary tokens with ones that carry stop text, partial UTF-8 bytes and specials."""
    rng = random.Random(seed)
    special = [tokenizer.eos_token_id]
    marked = sorted({i for s in interesting for i in tokenizer.encode(s, add_special_tokens=False)})
    pool = list(range(min(len(tokenizer), 3000)))
    return [[rng.choice(marked if rng.random() < 0.3 else special if rng.random() < 0.05 else pool)
             for _ in range(rng.randint(1, 24))] for _ in range(n)]


INTERESTING = [" Paris is the capital?", "\n", "\n\n", "Q:", " café", " €5", " 日本", "é", "?\n", " ✓"]


@pytest.mark.parametrize("gen", RULES)
def test_watch_stops_where_the_full_decode_does_byte_bpe(embedded_tokenizer, gen):
    for tokens in random_answers(embedded_tokenizer, INTERESTING, 150, seed=hash(gen) % 1000):
        assert first_stop_watch(embedded_tokenizer, tokens, gen) == first_stop_full(embedded_tokenizer, tokens, gen), \
            embedded_tokenizer.convert_ids_to_tokens(tokens)


@pytest.mark.parametrize("gen", RULES)
def test_watch_stops_where_the_full_decode_does_sentencepiece(gen):
    tok = sentencepiece_tokenizer()
    assert tok.decode(tok.encode(" café €", add_special_tokens=False)) == "café €"  # the byte fallback works
    for tokens in random_answers(tok, INTERESTING, 150, seed=7):
        assert first_stop_watch(tok, tokens, gen) == first_stop_full(tok, tokens, gen), tok.convert_ids_to_tokens(tokens)


def test_a_partial_character_is_checked_but_not_committed(embedded_tokenizer):
    """' 日本' is four byte-level tokens; the first two decode to an incomplete character: the watch
    holds no text for them, then exactly ' 日' and ' 日本' (a stop on '本' comes with the last)."""
    ids = embedded_tokenizer.encode(" 日本", add_special_tokens=False)
    assert [embedded_tokenizer.decode(ids[:n]) for n in (1, 2)] == [" \ufffd"] * 2, "pick a split character"
    watch = TextWatch(embedded_tokenizer, GenerationConfig(stop_after=("本",)))
    texts, reasons = [], []
    for n in range(1, len(ids) + 1):
        reasons.append(watch.push(ids[:n]))
        texts.append(watch.text)
    assert texts == ["", "", " 日", " 日本"] and reasons == [None, None, None, "stop"]


def test_each_push_decodes_a_window_not_the_whole_answer(embedded_tokenizer):
    """The point of the watch: decode calls see a few tokens, however long the answer grows."""
    seen: list[int] = []

    class Counting:
        def decode(self, tokens, **kw):
            seen.append(len(tokens))
            return embedded_tokenizer.decode(tokens, **kw)

    tokens = embedded_tokenizer.encode(" one two three four five six seven eight nine ten eleven twelve",
                                       add_special_tokens=False)
    watch = TextWatch(Counting(), GenerationConfig())
    assert all(watch.push(tokens[:n]) is None for n in range(1, len(tokens) + 1))
    assert max(seen) <= 2 and watch.text == " one two three four five six seven eight nine ten eleven twelve"


def test_a_stop_the_window_sees_is_confirmed_on_the_full_text():
    """A tokenizer whose windows disagree with the whole (here: windows decode to a newline the whole
    answer does not have) cannot end an answer early: the full decode decides, then the watch decodes in full."""

    class Odd:
        def decode(self, tokens, **kw):
            return "x\nyz" if len(tokens) == 2 else "x" * len(tokens)

    watch = TextWatch(Odd(), GenerationConfig())
    assert watch.push([1]) is None and watch.push([1, 2]) == "newline"  # window and whole agree
    watch = TextWatch(Odd(), GenerationConfig())
    watch.prefix, watch.read, watch.text = 1, 2, "xx"  # as if [1, 2] had decoded to "xx"
    assert watch.push([1, 2, 3]) is None and watch.exact  # the window [2, 3] said newline, the whole did not
    assert watch.push([1, 2, 3, 4]) is None  # from now on the whole answer is decoded


def test_no_text_rule_needs_no_decoding():
    assert not can_stop_on_text(GenerationConfig(stop_at_newline=False))
    assert can_stop_on_text(GenerationConfig(stop_at_newline=False, stop_after=("?",)))
