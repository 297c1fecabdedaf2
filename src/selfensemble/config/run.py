"""What defines a run (RunConfig), and its manifest form, old and new.

A run holds the engine's own config objects instead of copies of their fields:

  engine  config.engine.EngineConfig  how rows are laid out and run (attention, flex knobs, batch size)
  load    config.load.LoadSpec        which model, loaded how (model, device, dtype, seed, placement)
  gate    GateSettings             the paraphrase gate (on / off / automatic, embedder, threshold)

Every engine of a run is built from ``cfg.load`` + ``cfg.engine`` by engine_factory.build_engine,
so a field added to EngineConfig or LoadSpec reaches runs, manifests and Ray workers with no edit
here. The seed has one owner, ``load.seed`` (``cfg.seed`` reads it): the one number seeds the model
load (random:* weights), the dataset sample, the demonstrations and every sampling stream.

Manifests store the nested form ``{"engine": {...}, "load": {...}, "gate": {...}, "dataset": ...}``.
Run folders written before that hold a flat config; :func:`nested_config` reads either into the
nested form, so old folders keep resuming and reports read both. Importing this module loads no
torch (the CLI's ``--help`` and ``report`` stay fast; config.engine imports none either).

A RunConfig is checked when it is built (``__post_init__``): a method or match mode that does not
exist, a setting out of range or a combination that cannot mean anything raises ConfigError naming
the argument, before any data or model is read; ``dataclasses.replace`` checks the new config again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from selfensemble.config.demos import DEMO_MODES, LEGACY_DEMO_DRAW, demo_draw
from selfensemble.config.engine import EngineConfig
from selfensemble.config.gate import GateConfig, GateSettings
from selfensemble.config.load import LoadSpec
from selfensemble.config.variants import check_levels, check_variant_choice, parse_variants
from selfensemble.errors import ConfigError, SelfEnsembleError
from selfensemble.methods.registry import check_method
from selfensemble.scoring import check_match

#: Sections of a manifest config that hold a nested dataclass (RunConfig field → manifest key).
SECTIONS = ("engine", "load", "gate")


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (saved in the manifest; resuming requires the same values).
    Frozen: a changed setting is a new config (``dataclasses.replace``), never an edit in place.
    Checked when built: a bad value raises ConfigError naming its argument (see :meth:`__post_init__`).

    The run's own fields stay flat; the engine, the model load and the gate are held whole
    (``engine``, ``load``, ``gate``), never copied field by field.
    """

    dataset: str = "webqa"
    data_path: str | None = None
    split: str = "test"
    limit: int | None = None
    methods: list[str] = field(default_factory=lambda: ["origin"])
    num_paraphrases: int = 5  # prompts per question (N), the original included: N variants with --variants
    prompt_indices: list[int] | None = None
    variants: list[str] = field(default_factory=lambda: ["paraphrase"])  # config.variants.DIMENSIONS
    variant_levels: int | None = None  # values per variant dimension (None: num_paraphrases)
    few_shot: int = 5
    demos: str = "per-item"  # config.demos.DEMO_MODES: per-item | other-groups | shared (older runs)
    max_new_tokens: int = 16
    chat: bool = False
    match: str = "contains"  # scoring.DEFAULT_MATCH: gold inside the answer as whole words
    confidence_samples: int = 4
    # weighted_*: confidence (sampled) | entropy | agreement (per decode step) | a weights file (tune-weights)
    weights: str = "confidence"
    dataset_options: dict = field(default_factory=dict)
    out: str = "runs/experiment"
    subfolders: bool = True
    allow_mixed: bool = False  # resume under other versions / attention path, provenance per record
    engine: EngineConfig = field(default_factory=EngineConfig)
    load: LoadSpec = field(default_factory=LoadSpec)
    gate: GateSettings = field(default_factory=GateSettings)

    def __post_init__(self) -> None:
        """Every check that needs neither the data nor the model, so a bad run is refused at once.

        Methods and the match mode must be registered; demos one of DEMO_MODES; num_paraphrases at least
        1; prompt_indices within num_paraphrases (a plain run only); variants that vary the
        demonstrations need them; the gate's settings valid. A run folder's own checks (resume, the
        items it holds) come later, in pipeline.experiment.check_before_load.
        """
        # one spelling per run ("demos,format" == ["format", "demos"]): the manifest compares it on resume
        object.__setattr__(self, "variants", list(parse_variants(self.variants)))
        # copies of the caller's lists: editing the list a config was built from leaves the config as it was
        object.__setattr__(self, "methods", list(self.methods))
        if self.prompt_indices is not None:
            object.__setattr__(self, "prompt_indices", list(self.prompt_indices))
        object.__setattr__(self, "dataset_options", dict(self.dataset_options))
        check_levels(self.variant_levels)
        for method in self.methods:
            _as_config_error(check_method, method, ("methods",))
        # no arguments: the CLI would reword its "match mode" / "not a match" into "--match mode" / "not a --match"
        _as_config_error(check_match, self.match, ())
        if self.demos not in DEMO_MODES:
            raise ConfigError(f"Unknown demos {self.demos!r}; use one of {', '.join(DEMO_MODES)}.", arguments=("demos",))
        if self.num_paraphrases < 1:
            raise ConfigError("num_paraphrases must be >= 1 (it counts the original question).",
                              arguments=("num_paraphrases",))
        if not self.is_plain():
            check_variant_choice(self.variants, self.prompt_indices, self.few_shot)
        self.gate.resolve(generated=True)  # an unknown embedder, a similarity outside [-1, 1]
        bad = [i for i in self.prompt_indices or [] if not 0 <= i < self.num_paraphrases]
        if bad:
            raise ConfigError(f"prompt_indices {bad} out of range: num_paraphrases {self.num_paraphrases} gives "
                              f"prompts 0 to {self.num_paraphrases - 1}.", arguments=("prompt_indices", "num_paraphrases"))

    @property
    def seed(self) -> int:
        """The run's seed: ``load.seed`` (one owner; see the module docstring)."""
        return self.load.seed

    def is_plain(self) -> bool:
        """True for the plain run: paraphrases only, N of them (the prompts every earlier run asked)."""
        return list(self.variants) == ["paraphrase"] and self.variant_levels is None

    def levels(self) -> int:
        """Values per variant dimension: ``variant_levels``, else N (``num_paraphrases``)."""
        return self.variant_levels or self.num_paraphrases

    def paraphrases_needed(self) -> int:
        """Prompts each item needs written or found (pipeline.experiment): 1 when wording is not varied."""
        return self.levels() if "paraphrase" in self.variants else 1

    def gate_config(self, generated: bool) -> GateConfig:
        """The paraphrase gate for generated (True) or dataset (False) paraphrases."""
        return self.gate.resolve(generated)

    def method_config(self, method: str) -> dict:
        """The manifest config of one method's run, nested (other methods' names don't define it).

        ``{"dataset": ..., "engine": {...}, "load": {...}, "gate": {...}, "method": method, "demo_draw": 2}``:
        every field of the nested dataclasses is recorded, so a new one is compared on resume, and so
        is the version of the demonstration draw (config.demos), so a changed draw is never resumed.
        """
        d = asdict(self)  # a deep copy; the nested dataclasses become dicts
        for key in ("methods", "subfolders", "allow_mixed"):
            d.pop(key)
        d["method"] = method
        d["demo_draw"] = demo_draw(self.demos, self.few_shot)
        return d


def _as_config_error(check: Callable[[str], str], value: str, arguments: tuple[str, ...]) -> None:
    """``check(value)`` (methods.registry.check_method, scoring.check_match), its refusal a ConfigError
    listing ``arguments``; the message stays the check's own (it names the value and the choices)."""
    try:
        check(value)
    except ConfigError:
        raise
    except SelfEnsembleError as err:
        raise ConfigError(str(err), arguments=arguments) from None


# -- old flat manifests ------------------------------------------------------------------------------------

#: Where each key of a flat (pre-nesting) manifest config went. Frozen: it describes files already
#: written, so it never follows new fields of EngineConfig / LoadSpec.
FLAT_KEYS: dict[str, tuple[str, str]] = {
    **{k: ("engine", k) for k in ("attention", "layout", "positions", "rescale", "fusion_temperature",
                                  "fusion_scale", "batch_size")},
    **{k: ("load", k) for k in ("model", "device", "dtype", "seed", "device_map", "revision", "trust_remote_code")},
    "gate": ("gate", "enabled"),
    **{k: ("gate", k) for k in ("min_similarity", "embedder", "entity_guard")},
}

#: What runs used for settings their manifest does not hold: fields the flat RunConfig never had
#: (its engines ran EngineConfig's and LoadSpec's defaults of the time) and fields it recorded only
#: when set (device_map, revision, trust_remote_code; demos only when "per-item": older runs drew
#: one shared set; variants and variant_levels: runs before --variants asked paraphrases only).
#: A field added to EngineConfig / LoadSpec later gets one entry here (the value runs had before it
#: existed) and older folders keep resuming; without one, resuming them is
#: refused, naming the field. Any other key a manifest lacks stays absent, so it is refused as before.
UNRECORDED: dict[str, dict[str, Any]] = {
    "engine": {"reuse_prefix": True, "pad_multiple": 32, "compile": False, "prefix_cache_mb": 256.0},
    "load": {"device_map": None, "revision": None, "trust_remote_code": False, "quantization_config": None},
    "gate": {},
    "": {"demos": "shared", "variants": ["paraphrase"], "variant_levels": None},
}


def is_nested(config: dict) -> bool:
    """True for a manifest config written with nested sections (``load`` / ``engine`` dicts)."""
    return isinstance(config.get("load"), dict) or isinstance(config.get("engine"), dict)


def nested_config(config: dict) -> dict:
    """A manifest config in the nested form: a nested one as is, a flat (older) one converted.

    Flat: ``{"model": "m", "batch_size": 8, "gate": null, "dataset": "webqa", ...}`` →
    ``{"load": {"model": "m", ...}, "engine": {"batch_size": 8, ...}, "gate": {"enabled": null, ...},
    "dataset": "webqa", ...}``; either way the settings a manifest left out (UNRECORDED) are filled
    in, and a missing ``demo_draw`` is the legacy draw (config.demos.LEGACY_DEMO_DRAW; None zero-shot). Keys FLAT_KEYS does not know stay at the top level. Used once when an old folder is
    resumed (its manifest is then rewritten nested) and whenever a report reads a manifest.
    """
    if is_nested(config):
        out = {**config, **{name: dict(config[name]) for name in SECTIONS if isinstance(config.get(name), dict)}}
    else:
        out = {name: {} for name in SECTIONS}
        for key, value in config.items():
            section, name = FLAT_KEYS.get(key, ("", key))
            (out[section] if section else out)[name] = value
    for section, filled in UNRECORDED.items():
        target = out.get(section) if section else out
        if isinstance(target, dict):
            for key, value in filled.items():
                target.setdefault(key, value)
    if "demo_draw" not in out:  # written before draws were versioned: the first version of its mode
        out["demo_draw"] = LEGACY_DEMO_DRAW if isinstance(out.get("few_shot"), int) and out["few_shot"] > 0 else None
    return out
