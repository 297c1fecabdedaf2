"""Runs end to end: experiment, paraphrase writing and its gate, confidence, progress, backends."""
