"""The answering methods as registered objects: what each one does, declared once.

Every other module asks a method's ``Method`` (``get_method(name)``) what it does — how its rows
are laid out, how its next-token distributions fuse, whether it answers once per prompt — instead
of comparing its name, so a new method is one ``register_method`` call:

    register_method(Method("min", rows="each", fusion="min", fuse=my_min_rule))
    Engine(...).answer(prompts, "min")

  name          rows     fusion        answers
  origin        alone    none          1: the original question alone, one row
  per_prompt    each     none          N: every prompt alone (one row and one answer each)
  vote          each     none          1 of N: per_prompt's answers, the majority picked
  avg, max      each     avg, max      1: the N rows' next-token distributions fused every step
  weighted_*    each     weighted_*    1: the same with per-prompt weights (needs_weights)
  select        chosen   none          1: the prompt with the largest weight alone (dev-tuned weights)
  flex          packed   attention     1: the N prompts in one row under a block mask

This module imports neither torch nor the engine, so the report and the scorer (which run without
a model) read the same declarations; ``Method.fusion_fn`` resolves a fusion rule only when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from selfensemble.errors import SelfEnsembleError, did_you_mean

# the original alone | one row per prompt | all prompts in one row | the prompt with the largest weight alone
ROW_PLANS = ("alone", "each", "packed", "chosen")


def _majority(answers: Sequence[str]) -> int:
    """Index of the majority answer (scoring.majority_vote: normalised lemmas, ties to the earliest)."""
    from selfensemble.scoring import majority_vote

    return majority_vote(list(answers))[1]


@dataclass(frozen=True)
class Method:
    """One answering method: a row plan plus a fusion rule on top of the one decode loop.

    ``rows``: "alone" (prompt 0 only, one row), "each" (one row per prompt), "packed" (all prompts
    in one row under a block mask, a shared answer cue after them), "chosen" (the prompt with the
    largest weight alone, one row; the first on ties). ``fusion``: the rule's name —
    "none" (each answer group is one row), "attention" (packed rows fuse inside attention),
    or a next-token rule over a group's rows (fusion.FUSIONS' names, or any name given with its
    ``fuse`` function: (N, vocab) logits and (N,) weights or None → (vocab,) log-probs; with
    ``batched=True`` instead every group at once, as group_fusion's rules: (rows, vocab) logits and a
    ``group_fusion.Groups`` → (groups, vocab). A rule that is not batched runs once per group per step).
    ``per_prompt``: one answer group per prompt, so N answers come back (Answer.per_prompt);
    ``select``: picks the reported answer among those N (vote) — else the first is reported;
    ``derived_from``: a method whose answers determine this one's (a run derives vote's and
    select's records from per_prompt's instead of decoding again); ``needs_weights``: one weight per
    prompt (or a per-step rule; rows "chosen": numbers) is required; ``scores_continuations``: the
    method gives one distribution per step, so loglik can score a given continuation;
    ``compared_with``: a method the report also compares this one against (flex against the logit
    average it replaces).
    """

    name: str
    rows: str
    fusion: str = "none"
    fuse: Callable | None = None
    batched: bool = False
    per_prompt: bool = False
    select: Callable[[Sequence[str]], int] | None = None
    derived_from: str | None = None
    needs_weights: bool = False
    scores_continuations: bool = True
    compared_with: str | None = None
    summary: str = ""

    def __post_init__(self):
        if self.rows not in ROW_PLANS:
            raise ValueError(f"Method {self.name!r}: rows must be one of {ROW_PLANS}, got {self.rows!r}")
        if self.per_prompt and (self.rows != "each" or self.scores_continuations):
            raise ValueError(f"Method {self.name!r}: per-prompt answers need rows 'each' and give no one "
                             "distribution to score (scores_continuations=False)")
        if self.select is not None and not self.per_prompt:
            raise ValueError(f"Method {self.name!r}: select picks among per-prompt answers (per_prompt=True)")
        fused = self.rows == "each" and not self.per_prompt
        if fused == (self.fusion in ("none", "attention")):
            raise ValueError(f"Method {self.name!r}: one row per prompt answered once needs a fusion rule "
                             f"over the rows; any other plan has none, got fusion {self.fusion!r}")
        if (self.fusion == "attention") != (self.rows == "packed"):
            raise ValueError(f"Method {self.name!r}: fusion 'attention' goes with rows 'packed'")
        if self.rows == "chosen" and not self.needs_weights:
            raise ValueError(f"Method {self.name!r}: rows 'chosen' picks its prompt by weight (needs_weights=True)")
        if self.batched and self.fuse is None:
            raise ValueError(f"Method {self.name!r}: batched=True describes a fuse function; none was given")

    @property
    def packs_prompts(self) -> bool:
        """All prompts share one packed row (flex): the layout/positions/fusion knobs apply."""
        return self.rows == "packed"

    @property
    def one_row(self) -> bool:
        """One row per query (origin, flex): queries with a lone few-shot prefix batch together."""
        return self.rows in ("alone", "packed", "chosen")

    @property
    def asks_original_only(self) -> bool:
        """Only the original question is asked: paraphrases are neither written nor used."""
        return self.rows == "alone"

    @property
    def reports_original_answer(self) -> bool:
        """The reported answer is the original question's, decoded from it alone: ``origin``, and a
        per-prompt method without ``select`` (it reports the first of its N answers). Two such methods
        give the same answers by construction, so the report does not test one against the other."""
        return self.rows == "alone" or (self.per_prompt and self.select is None)

    @property
    def combines_prompts(self) -> bool:
        """One answer made from several prompts (a fusion rule, attention fusion, or a vote)."""
        return self.fusion != "none" or self.select is not None

    @property
    def single_prompt(self) -> bool:
        """Each answer is decoded from one prompt alone (echo is judged against that prompt only)."""
        return self.rows in ("alone", "chosen") or self.per_prompt

    def choose(self, answers: Sequence[str] | None, weights: Sequence[float] | None = None) -> int:
        """Which prompt the reported answer comes from: rows "chosen" → the largest of ``weights``
        (first on ties); a ``select`` → its pick among the per-prompt ``answers`` (vote's majority);
        else 0. Example: select with weights [.2, .5, .5] → 1; vote with answers [a, b, b] → 1."""
        if self.rows == "chosen":
            return heaviest(weights)
        return self.select(answers) if self.select is not None and answers else 0

    def fusion_fn(self) -> Callable:
        """The next-token rule one group's rows fuse by, (N, vocab) → (vocab,): ``fuse``, else
        fusion.FUSIONS[fusion], else identity (a batched ``fuse`` is run on the one group)."""
        from selfensemble.methods import fusion, group_fusion

        if self.fuse is not None:
            return group_fusion.one_group(self.fuse) if self.batched else self.fuse
        return fusion.FUSIONS.get(self.fusion, fusion.identity)

    def group_fusion_fn(self) -> Callable:
        """The rule every group of a decode step fuses by in one call, (rows, vocab) + Groups →
        (groups, vocab): a batched ``fuse``, else group_fusion.GROUP_FUSIONS[fusion], else
        identity_groups; a per-group ``fuse`` runs once per group (group_fusion.per_group)."""
        from selfensemble.methods import group_fusion

        if self.fuse is not None:
            return self.fuse if self.batched else group_fusion.per_group(self.fuse)
        return group_fusion.GROUP_FUSIONS.get(self.fusion, group_fusion.identity_groups)


def heaviest(weights: Sequence[float] | None) -> int:
    """Index of the largest weight, the first on ties (0 for none): the prompt ``select`` answers through."""
    if not weights or isinstance(weights, str):
        return 0
    values = [float(w) for w in weights]
    return values.index(max(values))


METHODS: dict[str, Method] = {}  # name → Method, in registration order (tables list methods in this order)


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Make ``method`` available by name everywhere a method is taken (engine, CLI, server, runs).

    Refuses a name already taken unless ``replace``; a fusion rule other than fusion.FUSIONS'
    must come with its ``fuse`` function. Returns the method.
    """
    if method.name in METHODS and not replace:
        raise ValueError(f"Method {method.name!r} is already registered (pass replace=True to replace it)")
    if method.fuse is None and method.fusion not in ("none", "attention", *_BUILTIN_RULES):
        raise ValueError(f"Method {method.name!r}: fusion {method.fusion!r} is not built in; give its fuse function")
    METHODS[method.name] = method
    return method


def unregister_method(name: str) -> Method:
    """Remove a registered method (e.g. one a test or plugin added); returns it."""
    return METHODS.pop(check_method(name))


def check_method(method: str) -> str:
    """``method`` if registered, else a clear error listing the methods (and a close name)."""
    if method not in METHODS:
        raise SelfEnsembleError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}."
                                + did_you_mean(method, list(METHODS)))
    return method


def get_method(method: str | Method) -> Method:
    """The registered ``Method`` named ``method`` (a Method passes through); unknown names: a clear error."""
    if isinstance(method, Method):
        return method
    return METHODS[check_method(method)]


def one_prompt_note(method: str | Method, n_prompts: int) -> str | None:
    """The note an answer carries when a method that combines prompts got only one: it then has
    nothing to combine, so its answer is that prompt's own (what ``origin`` gives). None otherwise."""
    spec = get_method(method)
    if n_prompts != 1 or not spec.combines_prompts:
        return None
    return (f"only one prompt: {spec.name} had nothing to combine, so this is the answer to that prompt "
            "alone (what origin gives)")


def methods_where(**declared: object) -> tuple[str, ...]:
    """Names of the methods whose attributes equal ``declared``, e.g. methods_where(needs_weights=True)."""
    return tuple(n for n, m in METHODS.items() if all(getattr(m, k) == v for k, v in declared.items()))


_BUILTIN_RULES = ("avg", "max", "weighted_avg", "weighted_max")  # fusion.FUSIONS' names (no torch import here)

for _m in (
    Method("origin", rows="alone", summary="the original question alone"),
    Method("per_prompt", rows="each", per_prompt=True, scores_continuations=False,
           summary="every prompt alone: N answers"),
    Method("vote", rows="each", per_prompt=True, select=_majority, derived_from="per_prompt",
           scores_continuations=False, summary="per_prompt's answers, the majority (normalised) picked"),
    Method("avg", rows="each", fusion="avg", summary="mean of the N next-token distributions"),
    Method("max", rows="each", fusion="max", summary="per-token max over the N distributions, renormalised"),
    Method("weighted_avg", rows="each", fusion="weighted_avg", needs_weights=True,
           summary="avg with per-prompt weights"),
    Method("weighted_max", rows="each", fusion="weighted_max", needs_weights=True,
           summary="max with per-prompt weights"),
    Method("select", rows="chosen", derived_from="per_prompt", needs_weights=True, scores_continuations=False,
           summary="the prompt with the largest dev-tuned weight (--weights FILE from tune-weights), alone"),
    Method("flex", rows="packed", fusion="attention", compared_with="avg",
           summary="the N prompts packed in one row under a block mask, one shared answer cue"),
):
    register_method(_m)
