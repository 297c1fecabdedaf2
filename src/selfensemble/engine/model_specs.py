"""The model specs that load without a network: their names, and the random test architectures.

Kept apart from ``models.py`` (which loads them) so ``hub.py`` can name them in its errors while
``models.py`` calls ``hub.py`` before a load: the dependency points one way, models → hub → specs.
"""

from __future__ import annotations

from selfensemble.config.defaults import DEFAULT_MODEL

# the second packaged model (optional extra `gemma3`; models.py says where its file comes from)
GEMMA3_SPEC = "gemma3-270m"
PACKAGED_GGUF_SPECS = (DEFAULT_MODEL, GEMMA3_SPEC)

# Shapes of real model families, shrunk for CPU tests ("tiny") or kept realistic for GPU benches.
_TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=2048)
RANDOM_CONFIGS: dict[str, tuple[str, dict]] = {
    "llama": ("llama", dict(_TINY)),
    "qwen2": ("qwen2", dict(_TINY)),
    "gemma": ("gemma", dict(_TINY, head_dim=16)),
    "phi3": ("phi3", dict(_TINY, pad_token_id=0)),
    "qwen3": ("qwen3", dict(_TINY, head_dim=16)),
    "olmo2": ("olmo2", dict(_TINY)),
    # sliding-window families with a window (16) that few-shot prompts exceed several times over
    "mistral": ("mistral", dict(_TINY, sliding_window=16)),
    "qwen2-swa": ("qwen2", dict(_TINY, use_sliding_window=True, sliding_window=16, max_window_layers=1)),
    "gemma2": ("gemma2", dict(_TINY, head_dim=16, sliding_window=16, query_pre_attn_scalar=16,
                              attn_logit_softcapping=5.0, final_logit_softcapping=30.0,
                              tie_word_embeddings=False)),
    "gemma3": ("gemma3_text", dict(_TINY, head_dim=16, sliding_window=16, query_pre_attn_scalar=16,
                                   layer_types=["sliding_attention", "full_attention"], tie_word_embeddings=False)),
    "smollm2-135m": ("llama", dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                                   num_attention_heads=9, num_key_value_heads=3,
                                   max_position_embeddings=8192, tie_word_embeddings=True)),
    "llama-3.2-1b": ("llama", dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                   num_attention_heads=32, num_key_value_heads=8, head_dim=64,
                                   max_position_embeddings=131072, rope_theta=500000.0,
                                   tie_word_embeddings=True)),
}
