"""Run folders on disk: the run store, records, resume comparison, provenance, shared caches."""
