"""The engine: models, prompts, packing, attention, the KV cache, decoding and the Engine.

May import: config, data, errors, fileio, methods, scoring (tests/test_import_graph.py checks every import, lazy ones included).
"""
