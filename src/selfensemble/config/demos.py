"""How few-shot demonstrations are drawn (data.base.Dataset.few_shot), and the version of each draw.

  per-item      k examples from the item's group pool (its relation), the item's own fact left out,
                seeded by (seed, group, item id). The item's answers are never read: a demonstration
                may share the gold, which is the relation's answer prior (report shows it as the
                ``majority_answer`` / ``majority_demo_answer`` baselines) rather than a hidden hint.
  other-groups  k examples from the pools of the *other* groups, seeded the same way: they teach the
                format and carry no answer prior for the item's relation.
  shared        one set per group, seeded by (seed, group): the oldest draw, kept to reproduce old runs.

A run records its draw's version (``demo_draw`` in its manifest config); resuming a folder written
under another version is refused (store/resume.py), so no run mixes answers asked with two draws.
"""

from __future__ import annotations

DEMO_MODES = ("per-item", "other-groups", "shared")
DEFAULT_DEMOS = "per-item"

#: The version of each mode's draw; bump it whenever the draw changes. per-item 1 left out every pool
#: example whose answer was one of the item's golds, so the gold was "the common answer missing" from
#: the demonstrations; 2 never reads the item's answers.
DEMO_DRAWS: dict[str, int] = {"per-item": 2, "other-groups": 1, "shared": 1}
#: The version a manifest written before draws were versioned used (whatever its mode).
LEGACY_DEMO_DRAW = 1


def demo_draw(demos: str, few_shot: int | None) -> int | None:
    """The draw version a run records: None when it shows no demonstrations (``few_shot`` 0), or for an
    unknown mode (refused elsewhere, naming the modes). Example: ("per-item", 5) → 2; ("shared", 0) → None."""
    if not few_shot or few_shot <= 0:
        return None
    return DEMO_DRAWS.get(demos)
