"""Run folders on disk: the run store, records, resume comparison, provenance, shared caches.

May import: config, data, errors, fileio, methods, scoring (tests/test_import_graph.py checks every import, lazy ones included).
"""
