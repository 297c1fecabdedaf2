"""Runs end to end: experiment, paraphrase writing and its gate, confidence, progress, backends.

May import: about, analysis, config, data, engine, errors, fileio, methods, scoring, store (tests/test_import_graph.py checks every import, lazy ones included).
"""
