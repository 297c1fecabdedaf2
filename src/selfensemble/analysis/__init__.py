"""Reading finished runs: statistics, the report, its renderings and charts (never loads a model)."""
