"""The answering methods: the registry and the fusion rules.

May import: config, errors, scoring (tests/test_layers.py checks every import, lazy ones included).
"""
