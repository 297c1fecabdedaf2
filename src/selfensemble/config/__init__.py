"""Every configuration dataclass and the measured defaults: engine (EngineConfig), load (LoadSpec),
gate (GateConfig, GateSettings), run (RunConfig), demos, variants, defaults. Plain data, no torch.

May import: errors (tests/test_import_graph.py checks every import, lazy ones included).
"""
