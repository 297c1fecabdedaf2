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
