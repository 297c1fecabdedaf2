"""The answering methods: the registry and the fusion rules.

May import: errors, scoring (tests/test_import_graph.py checks every import, lazy ones included).
"""
