"""Ways into the engine from other tools: ``lm_eval`` (the lm-evaluation-harness model ``selfensemble``)."""
