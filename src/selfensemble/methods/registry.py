"""The answering methods as registered objects: what each one does, declared once.

Every other module asks a method's ``Method`` (``get_method(name)``) what it does — how its rows
are laid out, how its next-token distributions fuse, whether it answers once per prompt — instead
of comparing its name, so a new method is one ``register_method`` call (docs/methods.md):

    register_method(Method("min", rows="each", fuse=my_min_rule))
    Engine(...).answer(prompts, "min")

  name          rows     fuse               answers
  origin        alone    —                  1: the original question alone, one row
  per_prompt    each     —                  N: every prompt alone (one row and one answer each)
  vote          each     —                  1 of N: per_prompt's answers, the majority picked
  avg, max      each     fusion.avg, max_   1: the N rows' next-token distributions fused every step
  weighted_*    each     fusion.weighted_*  1: the same with per-prompt weights (needs_weights)
  select        chosen   —                  1: the prompt with the largest weight alone (dev-tuned weights)
  flex          packed   — (in attention)   1: the N prompts in one row under a block mask

Another package adds methods without importing anything here first: it declares an entry point in
the group ``selfensemble.methods`` (name = the method's name, value = a ``Method`` or a function
returning one), and the registry loads it the first time that name is looked up or the methods are
listed (:data:`ENTRY_POINT_GROUP`).

This module imports neither torch nor the engine, so the report and the CLI's help (which run
without a model) read the same declarations; the built-in rules are :class:`BuiltinRule`, which
import fusion.py only when called.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from importlib import import_module, metadata

from selfensemble.errors import ConfigError, SelfEnsembleError, did_you_mean

ENTRY_POINT_GROUP = "selfensemble.methods"  # third-party methods: [project.entry-points."selfensemble.methods"]


class Rows(str, Enum):
    """A method's row plan: how one query's prompts become token rows (engine/rows.py lays them out)."""

    ALONE = "alone"    # prompt 0 (the original question) alone, one row
    EACH = "each"      # one row per prompt
    PACKED = "packed"  # all prompts in one row under a block mask, one shared answer cue after them
    CHOSEN = "chosen"  # the prompt with the largest weight alone, one row (the first on ties)

    def __str__(self) -> str:
        return self.value


ROW_PLANS = tuple(r.value for r in Rows)


def _majority(answers: Sequence[str]) -> int:
    """Index of the majority answer (scoring.majority_vote: normalised lemmas, ties to the earliest)."""
    from selfensemble.scoring import majority_vote

    return majority_vote(list(answers))[1]


@dataclass(frozen=True)
class BuiltinRule:
    """A built-in next-token rule: its per-group function in methods/fusion.py and its batched twin
    in methods/group_fusion.py, imported on first use (both modules import torch; this one does not).

    Called as the per-group rule itself: (N, vocab) logits and (N,) weights or None → (vocab,)
    log-probs. Example: BuiltinRule("avg", "avg_groups") is fusion.avg / group_fusion.avg_groups.
    """

    one_group: str   # function name in methods/fusion.py
    all_groups: str  # function name in methods/group_fusion.py

    @property
    def __name__(self) -> str:  # a rule's label, as a function's would be
        return self.one_group.rstrip("_")

    def resolve(self) -> Callable:
        return getattr(import_module("selfensemble.methods.fusion"), self.one_group)

    def resolve_groups(self) -> Callable:
        return getattr(import_module("selfensemble.methods.group_fusion"), self.all_groups)

    def __call__(self, logits, weights=None):
        return self.resolve()(logits, weights)


@dataclass(frozen=True)
class Method:
    """One answering method: a row plan plus a fusion rule on top of the one decode loop.

    ``rows``: a :class:`Rows` plan (its value as a string is accepted). ``fuse``: the next-token rule
    over the rows of one answer group — (N, vocab) logits and (N,) weights or None → (vocab,)
    log-probs; with ``batched=True`` instead every group at once, as group_fusion's rules: (rows,
    vocab) logits and a ``group_fusion.Groups`` → (groups, vocab). A rule that is not batched runs
    once per group per step. Exactly the methods with one row per prompt answered once have one
    (rows "each", not per_prompt); every other plan has none: its groups are one row each (flex
    fuses its prompts inside attention). ``fusion``: a label for display only (defaults to the
    rule's name); no code looks anything up by it.
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
    rows: Rows | str  # a string is converted to its Rows value on construction
    fusion: str = ""
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
        object.__setattr__(self, "rows", Rows(self.rows))
        if self.per_prompt and (self.rows is not Rows.EACH or self.scores_continuations):
            raise ValueError(f"Method {self.name!r}: per-prompt answers need rows 'each' and give no one "
                             "distribution to score (scores_continuations=False)")
        if self.select is not None and not self.per_prompt:
            raise ValueError(f"Method {self.name!r}: select picks among per-prompt answers (per_prompt=True)")
        if self.fuse is not None and not callable(self.fuse):
            raise ValueError(f"Method {self.name!r}: fuse must be a function, got {self.fuse!r}")
        if (self.rows is Rows.EACH and not self.per_prompt) != (self.fuse is not None):
            raise ValueError(f"Method {self.name!r}: one row per prompt answered once needs a fusion rule "
                             f"over the rows (fuse=...); any other plan has none, got fuse={self.fuse!r}")
        if self.rows is Rows.CHOSEN and not self.needs_weights:
            raise ValueError(f"Method {self.name!r}: rows 'chosen' picks its prompt by weight (needs_weights=True)")
        if self.batched and self.fuse is None:
            raise ValueError(f"Method {self.name!r}: batched=True describes a fuse function; none was given")
        if not self.fusion and self.fuse is not None:
            object.__setattr__(self, "fusion", getattr(self.fuse, "__name__", type(self.fuse).__name__))

    @property
    def fuses_logits(self) -> bool:
        """Its rows' next-token distributions fuse by ``fuse`` every step (avg, max, weighted_*)."""
        return self.fuse is not None

    @property
    def packs_prompts(self) -> bool:
        """All prompts share one packed row (flex): the layout/positions/fusion knobs apply."""
        return self.rows is Rows.PACKED

    @property
    def one_row(self) -> bool:
        """One row per query (origin, flex): queries with a lone few-shot prefix batch together."""
        return self.rows is not Rows.EACH

    @property
    def asks_original_only(self) -> bool:
        """Only the original question is asked: paraphrases are neither written nor used."""
        return self.rows is Rows.ALONE

    @property
    def reports_original_answer(self) -> bool:
        """The reported answer is the original question's, decoded from it alone: ``origin``, and a
        per-prompt method without ``select`` (it reports the first of its N answers). Two such methods
        give the same answers by construction, so the report does not test one against the other."""
        return self.rows is Rows.ALONE or (self.per_prompt and self.select is None)

    @property
    def combines_prompts(self) -> bool:
        """One answer made from several prompts (a fusion rule, attention fusion, or a vote)."""
        return self.fuses_logits or self.packs_prompts or self.select is not None

    @property
    def single_prompt(self) -> bool:
        """Each answer is decoded from one prompt alone (echo is judged against that prompt only)."""
        return self.rows in (Rows.ALONE, Rows.CHOSEN) or self.per_prompt

    def choose(self, answers: Sequence[str] | None, weights: Sequence[float] | str | None = None) -> int:
        """Which prompt the reported answer comes from: rows "chosen" → the largest of ``weights``
        (first on ties); a ``select`` → its pick among the per-prompt ``answers`` (vote's majority);
        else 0. Example: select with weights [.2, .5, .5] → 1; vote with answers [a, b, b] → 1."""
        if self.rows is Rows.CHOSEN:
            return heaviest(weights)
        return self.select(answers) if self.select is not None and answers else 0

    def fusion_fn(self) -> Callable:
        """The next-token rule one group's rows fuse by, (N, vocab) → (vocab,): ``fuse`` (a batched
        one run on the one group), else fusion.identity (each group is one row)."""
        from selfensemble.methods import fusion, group_fusion

        if isinstance(self.fuse, BuiltinRule):
            return self.fuse.resolve()
        if self.fuse is None:
            return fusion.identity
        return group_fusion.one_group(self.fuse) if self.batched else self.fuse

    def group_fusion_fn(self) -> Callable:
        """The rule every group of a decode step fuses by in one call, (rows, vocab) + Groups →
        (groups, vocab): a batched ``fuse`` (a built-in's batched twin), a per-group ``fuse`` once per
        group (group_fusion.per_group), else group_fusion.identity_groups."""
        from selfensemble.methods import group_fusion

        if isinstance(self.fuse, BuiltinRule):
            return self.fuse.resolve_groups()
        if self.fuse is None:
            return group_fusion.identity_groups
        return self.fuse if self.batched else group_fusion.per_group(self.fuse)


def heaviest(weights: Sequence[float] | str | None) -> int:
    """Index of the largest weight, the first on ties (0 for none): the prompt ``select`` answers through."""
    if not weights or isinstance(weights, str):
        return 0
    values = [float(w) for w in weights]
    return values.index(max(values))


class MethodRegistry(Mapping[str, Method]):
    """name → Method in registration order (tables list methods in this order), with the methods of
    other packages (entry points in :data:`ENTRY_POINT_GROUP`) loaded lazily.

    Looking up a name that is not registered loads the entry point of that name, if any; listing
    (iterating, ``len``) loads every entry point not loaded yet. The installed entry points are read
    once per process (:func:`discover_methods` reads them again). A plugin that fails to load is left
    out loudly: a RuntimeWarning the first time a listing leaves it out, a ConfigError with the cause
    when its name is asked for (:func:`check_method`). Safe to use from several threads (the server's).
    """

    def __init__(self) -> None:
        self._methods: dict[str, Method] = {}
        self._entry_points: dict[str, metadata.EntryPoint] | None = None
        self._tried: set[str] = set()  # entry points loaded (or failed), each once
        self._broken: dict[str, str] = {}  # entry-point name → why it was left out
        self._warned: set[str] = set()  # broken plugins a listing has warned about (once each)
        self._lock = threading.RLock()

    def __getitem__(self, name: str) -> Method:
        if name not in self._methods and isinstance(name, str):
            self._load(name)
        return self._methods[name]

    def __iter__(self) -> Iterator[str]:
        self._load_all()
        return iter(list(self._methods))

    def __len__(self) -> int:
        self._load_all()
        return len(self._methods)

    def add(self, method: Method, replace: bool = False) -> Method:
        """Register ``method`` under its name (register_method checks its type first)."""
        if method.name in self._methods and not replace:
            raise ValueError(f"Method {method.name!r} is already registered (pass replace=True to replace it)")
        self._methods[method.name] = method
        return method

    def remove(self, name: str) -> Method:
        """Drop a registered method; a plugin's stays dropped until :meth:`rescan`."""
        return self._methods.pop(name)

    def plugin_error(self, name: str) -> str | None:
        """Why the entry point ``name`` was left out, or None (loaded, or there is none)."""
        return self._broken.get(name)

    def rescan(self) -> None:
        """Forget the entry points read so far: the next lookup or listing reads them again."""
        with self._lock:
            self._entry_points, self._tried, self._broken, self._warned = None, set(), {}, set()

    def _plugins(self) -> dict[str, metadata.EntryPoint]:
        if self._entry_points is None:
            self._entry_points = {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        return self._entry_points

    def _load(self, name: str) -> str | None:
        """Load the entry point ``name`` (once) and register its method; returns why it failed, or None."""
        with self._lock:
            ep = self._plugins().get(name)
            if ep is None or name in self._tried:
                return None if ep is None else self._broken.get(name)
            self._tried.add(name)
            try:
                method = ep.load()
                method = method() if callable(method) and not isinstance(method, Method) else method
                if not isinstance(method, Method):
                    raise TypeError(f"it gives a {type(method).__name__}, not a selfensemble Method")
                if method.name != name:
                    raise ValueError(f"it gives the method {method.name!r} under the name {name!r}")
                if self._methods.get(name) is not method:  # its module may have registered it on import
                    self.add(method)
            except Exception as err:  # a third party's code: any failure leaves it out, with the cause
                dist = getattr(getattr(ep, "dist", None), "name", "?")
                self._broken[name] = f"entry point {ep.value!r} of package {dist}: {type(err).__name__}: {err}"
            return self._broken.get(name)

    def _load_all(self) -> None:
        with self._lock:
            for name in list(self._plugins()):
                why = self._load(name)
                if why is not None and name not in self._warned:
                    self._warned.add(name)
                    warnings.warn(f"selfensemble: method plugin {name!r} left out: {why}", RuntimeWarning,
                                  stacklevel=3)  # the caller that listed the methods


METHODS = MethodRegistry()  # every registered method, built-in first, then in-process and plugin ones


def register_method(method: Method, *, replace: bool = False) -> Method:
    """Make ``method`` available by name everywhere a method is taken (engine, CLI, server, runs).

    Refuses a name already taken unless ``replace``. Returns the method. Another package can instead
    declare it as an entry point (module docstring; docs/methods.md).
    """
    if not isinstance(method, Method):
        raise TypeError(f"register_method takes a Method, got {type(method).__name__}")
    return METHODS.add(method, replace)


def unregister_method(name: str) -> Method:
    """Remove a registered method (e.g. one a test or plugin added); returns it."""
    return METHODS.remove(check_method(name))


def discover_methods() -> tuple[str, ...]:
    """Read the installed entry points again and load every method plugin not loaded yet (for a
    plugin installed while this process runs); returns every registered method's name."""
    METHODS.rescan()
    return tuple(METHODS)


def check_method(method: str) -> str:
    """``method`` if registered (a plugin of that name is loaded first), else a clear error listing
    the methods (and a close name), or saying why the plugin of that name could not be loaded."""
    if method not in METHODS:
        why = METHODS.plugin_error(method)
        if why is not None:
            raise ConfigError(f"Method {method!r} comes from a plugin that could not be loaded: {why}")
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


# -- derived sets: queries on the registry, never hand-kept lists of names ----------------------
def methods_where(**declared: object) -> tuple[str, ...]:
    """Names of the methods whose attributes equal ``declared``, e.g. methods_where(needs_weights=True)."""
    return tuple(n for n, m in METHODS.items() if all(getattr(m, k) == v for k, v in declared.items()))


def weighted_methods() -> tuple[str, ...]:
    """The methods that need one weight per prompt (weighted_avg, weighted_max, select)."""
    return methods_where(needs_weights=True)


def one_row_methods() -> tuple[str, ...]:
    """The methods that lay a query out as one row (origin, select, flex)."""
    return methods_where(one_row=True)


def logit_fusion_methods() -> tuple[str, ...]:
    """The methods whose rows' next-token distributions fuse every step (avg, max, weighted_*)."""
    return methods_where(fuses_logits=True)


for _m in (
    Method("origin", rows=Rows.ALONE, summary="the original question alone"),
    Method("per_prompt", rows=Rows.EACH, per_prompt=True, scores_continuations=False,
           summary="every prompt alone: N answers"),
    Method("vote", rows=Rows.EACH, per_prompt=True, select=_majority, derived_from="per_prompt",
           scores_continuations=False, summary="per_prompt's answers, the majority (normalised) picked"),
    Method("avg", rows=Rows.EACH, fuse=BuiltinRule("avg", "avg_groups"),
           summary="mean of the N next-token distributions"),
    Method("max", rows=Rows.EACH, fuse=BuiltinRule("max_", "max_groups"),
           summary="per-token max over the N distributions, renormalised"),
    Method("weighted_avg", rows=Rows.EACH, fuse=BuiltinRule("weighted_avg", "weighted_avg_groups"),
           needs_weights=True, summary="avg with per-prompt weights"),
    Method("weighted_max", rows=Rows.EACH, fuse=BuiltinRule("weighted_max", "weighted_max_groups"),
           needs_weights=True, summary="max with per-prompt weights"),
    Method("select", rows=Rows.CHOSEN, derived_from="per_prompt", needs_weights=True, scores_continuations=False,
           summary="the prompt with the largest dev-tuned weight (--weights FILE from tune-weights), alone"),
    Method("flex", rows=Rows.PACKED, compared_with="avg",
           summary="the N prompts packed in one row under a block mask, one shared answer cue"),
):
    METHODS.add(_m)

#: The methods this package registers itself, in order (listing them loads no plugin: `--help` uses it).
BUILTIN_METHODS: tuple[str, ...] = tuple(METHODS._methods)
