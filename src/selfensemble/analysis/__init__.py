"""Reading finished runs: statistics, the report, its renderings and charts (never loads a model).

May import: config, data, errors, fileio, methods, scoring, store (tests/test_import_graph.py checks every import, lazy ones included).
"""
