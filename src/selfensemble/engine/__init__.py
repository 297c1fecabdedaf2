"""The engine: models, prompts, packing, attention, the KV cache, decoding and the Engine."""
