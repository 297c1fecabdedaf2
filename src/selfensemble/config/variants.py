"""Which prompt dimensions a question is varied over (``--variants``), parsed and checked.

    paraphrase  the question's wording: the dataset's templates or model-written paraphrases (today's prompts)
    format      the surface: field names, separators, casing, answer cue, spacing (engine/formats.py)
    demos       which few-shot demonstrations: another seeded draw (Dataset.few_shot with another seed)
    order       the same demonstrations, permuted

A query's N prompts are N points of the product of the chosen dimensions (engine/variants.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from selfensemble.errors import ConfigError, did_you_mean

DIMENSIONS = ("paraphrase", "format", "demos", "order")
DEFAULT_VARIANTS = ("paraphrase",)


def parse_variants(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"format,demos"`` (or a list) → ``("format", "demos")`` in DIMENSIONS order; None → the default.

    The canonical order makes ``demos,format`` and ``format,demos`` the same run (compared on resume).
    """
    if value is None:
        return DEFAULT_VARIANTS
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value)]
    names = [v for v in names if v]
    if not names:
        raise ConfigError(f"variants: name at least one of {', '.join(DIMENSIONS)}.")
    for v in names:
        if v not in DIMENSIONS:
            raise ConfigError(f"Unknown variant dimension {v!r}; use {', '.join(DIMENSIONS)} (comma-separated)."
                              + did_you_mean(v, list(DIMENSIONS)))
    if len(set(names)) != len(names):
        raise ConfigError(f"variants: {','.join(names)} names a dimension twice.")
    return tuple(d for d in DIMENSIONS if d in names)


def check_levels(levels: int | None) -> int | None:
    """``variant_levels``: values per dimension (None: as many as prompts per question), at least 1."""
    if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int) or levels < 1):
        raise ConfigError(f"variant_levels must be a whole number >= 1 (or None), got {levels!r}.")
    return levels


def check_variant_choice(variants: Sequence[str], prompt_indices: Sequence[int] | None, few_shot: int) -> None:
    """Refuse a variants run (any choice but the plain one) whose settings cannot mean anything:
    prompt_indices (they pick paraphrases of a plain run), or demos / order without enough demonstrations."""
    if prompt_indices is not None:
        raise ConfigError("prompt_indices picks paraphrases of a plain run; with variants (or variant_levels) "
                          "the prompts are drawn per item. Drop one of them.",
                          arguments=("prompt_indices", "variants", "variant_levels"))
    bare = [d for d in ("demos", "order") if d in variants]
    if bare and few_shot < 1:
        raise ConfigError(f"variants {','.join(bare)} varies the demonstrations, but few_shot is 0.",
                          arguments=("variants", "few_shot"))
    if "order" in variants and few_shot < 2:
        raise ConfigError("variants order permutes the demonstrations: it needs few_shot 2 or more.",
                          arguments=("variants", "few_shot"))
