"""Every configuration dataclass and the measured defaults: engine (EngineConfig), load (LoadSpec),
gate (GateConfig, GateSettings), run (RunConfig), demos, variants, defaults. Plain data, no torch;
a RunConfig checks its method and match names against the methods registry and scoring when built.

May import: errors, methods, scoring (tests/test_import_graph.py checks every import, lazy ones included).
"""
