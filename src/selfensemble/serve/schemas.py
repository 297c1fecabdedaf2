"""Request bodies of the HTTP API (pydantic): limits here turn bad input into a 422, not a 500.

``EnsembleRequest`` is this project's own shape and forbids unknown fields (a typo is an error,
never silently ignored). ``ChatRequest`` follows OpenAI's chat-completions body so existing clients
work unchanged, as does ``CompletionRequest`` (the legacy completions body); fields we cannot honour
(n > 1, penalties, tools) are refused, others that only describe the caller (``user``, ``metadata``)
are accepted and unused. ``stream: true`` is served as server-sent events (serve/streams.py).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selfensemble.errors import SelfEnsembleError

MAX_PARAPHRASES = 10  # paraphrases a request gives, besides the question
MAX_PROMPTS = MAX_PARAPHRASES + 1  # num_paraphrases: prompts per question, the question included
MAX_CHARS = 2000  # per prompt
MAX_NEW_TOKENS = 256
DEFAULT_PROMPTS = 5  # num_paraphrases when a request gives neither: the question and 4 written paraphrases, as `ask`
NUM_PARAPHRASES_DOC = ("prompts per question, the question included (as every command's --num-paraphrases): "
                       "the model writes N - 1 paraphrases; 1 asks the question alone")


def _no_blank(values: list[str] | None) -> list[str] | None:
    for i, p in enumerate(values or []):
        if not p.strip():
            raise ValueError(f"paraphrase {i} is empty or whitespace; every paraphrase needs text")
        if len(p) > MAX_CHARS:
            raise ValueError(f"paraphrase {i} is longer than {MAX_CHARS} characters")
    return values


def _prompt_count(value: int | None, least: int) -> int | None:
    """num_paraphrases below ``least``: an error that says what the number counts (it once counted
    the paraphrases besides the question, where 0 meant none)."""
    if value is not None and value < least:
        raise ValueError(f"num_paraphrases counts the prompts per question, the question included, so it must be "
                         f">= {least}" + (" (1 asks the question alone)" if least == 1 else " to leave a paraphrase to "
                         "write") + f"; got {value}")
    return value


class Sampling(BaseModel):
    """Greedy unless ``temperature`` > 0; a sampled answer is reproducible from ``seed``."""

    temperature: float | None = Field(None, ge=0, le=5)
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, ge=0)


class EnsembleRequest(Sampling):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_CHARS)
    paraphrases: list[str] | None = Field(None, max_length=MAX_PARAPHRASES)
    num_paraphrases: int | None = Field(None, le=MAX_PROMPTS, description=NUM_PARAPHRASES_DOC)
    methods: list[str] = Field(default_factory=lambda: ["flex"], min_length=1, max_length=8)
    max_new_tokens: int = Field(16, ge=1, le=MAX_NEW_TOKENS)
    few_shot: bool = True
    chat: bool = False
    weights: list[float] | None = Field(None, max_length=MAX_PARAPHRASES + 1)
    stream: bool = False  # server-sent events (serve/streams.py)

    @field_validator("paraphrases")
    @classmethod
    def _paraphrases_have_text(cls, v: list[str] | None) -> list[str] | None:
        return _no_blank(v)

    @field_validator("num_paraphrases")
    @classmethod
    def _counts_prompts(cls, v: int | None) -> int | None:
        return _prompt_count(v, 1)

    @field_validator("question")
    @classmethod
    def _question_has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the question is empty or whitespace")
        return v

    @model_validator(mode="after")
    def _one_source(self) -> EnsembleRequest:
        if self.paraphrases is not None and self.num_paraphrases is not None:
            raise ValueError("give either paraphrases or num_paraphrases (how many to generate), not both")
        if len(set(self.methods)) != len(self.methods):
            raise ValueError(f"methods has duplicates: {self.methods}")
        return self


class ParaphraseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    question: str = Field(min_length=1, max_length=MAX_CHARS)
    num_paraphrases: int = Field(DEFAULT_PROMPTS, le=MAX_PROMPTS, description=NUM_PARAPHRASES_DOC)
    seed: int = Field(0, ge=0)

    @field_validator("num_paraphrases")
    @classmethod
    def _counts_prompts(cls, v: int) -> int:
        _prompt_count(v, 2)
        return v


class SelfEnsembleOptions(BaseModel):
    """The extra ``selfensemble`` body field of a chat completion."""

    model_config = ConfigDict(extra="forbid")

    method: str = "flex"
    paraphrases: list[str] | None = Field(None, max_length=MAX_PARAPHRASES)
    num_paraphrases: int | None = Field(None, le=MAX_PROMPTS, description=NUM_PARAPHRASES_DOC)
    few_shot: bool = True

    @field_validator("paraphrases")
    @classmethod
    def _paraphrases_have_text(cls, v: list[str] | None) -> list[str] | None:
        return _no_blank(v)

    @field_validator("num_paraphrases")
    @classmethod
    def _counts_prompts(cls, v: int | None) -> int | None:
        return _prompt_count(v, 1)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Plain text of the message; OpenAI's list-of-parts form keeps only its text parts."""
        if isinstance(self.content, list):
            return "".join(p.get("text", "") for p in self.content if p.get("type") == "text")
        return self.content or ""


class _OpenAIBody(Sampling):
    """The fields OpenAI's chat and legacy completions bodies share."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)  # > 1 is refused by the route with a 400 (one answer per request)
    stream: bool = False
    stream_options: dict[str, Any] | None = None  # include_usage: a last chunk with the token counts
    selfensemble: SelfEnsembleOptions = Field(default_factory=SelfEnsembleOptions)

    _unsupported: tuple[str, ...] = ("frequency_penalty", "presence_penalty", "logit_bias", "logprobs")

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        for name in self._unsupported:
            value = (self.model_extra or {}).get(name)
            if value not in (None, 0, False, {}, []):
                raise ValueError(f"{name} is not supported by selfensemble serve")
        if self.selfensemble.paraphrases is not None and self.selfensemble.num_paraphrases is not None:
            raise ValueError("give either selfensemble.paraphrases or selfensemble.num_paraphrases, not both")
        return self

    def stop_strings(self) -> tuple[str, ...]:
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))

    @staticmethod
    def _checked(text: str, what: str) -> str:
        if not text.strip():
            raise SelfEnsembleError(f"{what} is empty (the question goes there)")
        if len(text) > MAX_CHARS:
            raise SelfEnsembleError(f"the question is longer than {MAX_CHARS} characters")
        return text


class ChatRequest(_OpenAIBody):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_NEW_TOKENS)

    _unsupported = ("frequency_penalty", "presence_penalty", "logit_bias", "tools", "functions",
                    "response_format", "logprobs", "top_logprobs")

    def question(self) -> str:
        users = [m for m in self.messages if m.role == "user"]
        if not users or not users[-1].text().strip():
            raise SelfEnsembleError("messages need a non-empty user message (the last one is the question)")
        return self._checked(users[-1].text(), "the last user message")

    def new_tokens(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 16


class CompletionRequest(_OpenAIBody):
    """OpenAI's legacy completions body: ``prompt`` is the question (one string, or a list of one)."""

    prompt: str | list[str]

    _unsupported = ("frequency_penalty", "presence_penalty", "logit_bias", "logprobs", "echo", "suffix")

    def question(self) -> str:
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise SelfEnsembleError(f"prompt: one question per request, got a list of {len(self.prompt)}")
            return self._checked(self.prompt[0], "prompt")
        return self._checked(self.prompt, "prompt")

    def new_tokens(self) -> int:
        return self.max_tokens or 16
