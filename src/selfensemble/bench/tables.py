"""The benchmark result (``run_benchmark``'s dict) as a markdown report: environment, one table per section."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: Sequence[str], lines: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_fmt(v) for v in line) + " |" for line in lines]
    return "\n".join(out)


def _engine_table(rows: list[dict]) -> str:
    headers = ("method", "N", "batch", "layout", "decode", "s/q", "× origin", "× HF", "q/s", "prefill tok/q",
               "gen tok/s", "syncs/step", "compile s", "compiles warm/timed", "prefix hits/misses", "peak RSS MB",
               "CUDA peak MB", "prefill path", "decode path")
    lines = [(r["method"], r["n"], r["batch_size"], r["layout"], r.get("decode_mode"), r["s_per_q"],
              r["ratio_vs_origin"], r["ratio_vs_hf"], r["q_per_s"], round(r["prefill_tokens_per_q"], 1),
              round(r["gen_tokens_per_s"], 1), r.get("host_syncs_per_step"), r["compile_seconds"],
              f"{r['compiles_warmup']}/{r['compiles_timed']}",
              f"{r.get('prefix_cache_hits', 0)}/{r.get('prefix_cache_misses', 0)}", round(r["peak_rss_mb"]),
              round(r["cuda_peak_mb"]) if r["cuda_peak_mb"] is not None else None, r.get("prefill"), r.get("decode"))
             for r in rows]
    return _table(headers, lines)


def _load(env: dict) -> str:
    load = env.get("load_average")
    return "/".join(f"{x:.1f}" for x in load) if load else "?"


def format_table(result: dict) -> str:
    """The whole result as markdown: environment, one table per section, then the targets."""
    env, cfg = result["environment"], result["config"]
    parts = [
        "## selfensemble benchmark",
        f"{env['model']} ({env['parameters'] / 1e6:.1f} M params, {env['dtype']}) on {env['device']} "
        f"[{env['device_name']}], {env['cpu_count']} CPUs, torch {env['torch']}, transformers "
        f"{env['transformers']}, {env['torch_threads']} torch threads, load {_load(env)}, commit {(env['git_commit'] or '?')[:10]}{' (dirty)' if env['git_dirty'] else ''}",
        f"{cfg['questions']} questions ({result['questions_source']}), {cfg['max_new_tokens']} new tokens, "
        f"prefix {result['prompt_tokens']['prefix']} tokens, first prompt {result['prompt_tokens']['first_prompt']} "
        f"tokens, flex {'compiled' if result['compile_flex'] else 'eager'}, decode step "
        f"{' and '.join(cfg.get('decode_modes', ['eager']))}, prefix cache bound {cfg.get('prefix_cache_mb', 256):g} MiB",
        "", "### Engine (s/q after warm-up; × origin at the same batch size)", _engine_table(result["rows"]),
    ]
    if result["naive"]:
        parts += ["", "### Naive full recompute vs cached engine (batch 1)", _table(
            ("method", "N", "questions", "naive s/q", "cached s/q", "speed-up", "prompt tok/q", "same tokens"),
            [(r["method"], r["n"], r["questions"], r["s_per_q"], r["cached_s_per_q"], r["speedup"],
              round(r["prompt_tokens_per_q"], 1), f"{r['agree']}/{r['questions']}" if r["agree"] is not None else None)
             for r in result["naive"]])]
    if result["prefix"]:
        parts += ["", "### Prefix KV reuse (1 new token, batch 1)", _table(
            ("method", "layout", "reuse prefix", "N", "row prefill tok/q", "prefix tok (once)",
             "amortised tok/q", "first-token s/q"),
            [(r["method"], r["layout"], r["reuse_prefix"], r["n"], round(r["row_prefill_tokens_per_q"], 1),
              r["prefix_tokens_once"], round(r["amortised_prefill_tokens_per_q"], 1), r["first_token_s_per_q"])
             for r in result["prefix"]])]
    if result["storm"]["runs"]:
        parts += ["", "### Compile storm (flex, shared layout, batch 1)", _table(
            ("pad multiple", "questions", "new tok", "distinct lengths", "padded lengths", "compiles",
             "probe compiles", "s/q", "prefill path"),
            [(r["pad_multiple"], r["questions"], r["new_tokens"], r["distinct_lengths"], r["distinct_padded_lengths"],
              r["compiles"], r["probe_compiles"], r["s_per_q"], r.get("prefill")) for r in result["storm"]["runs"]])]
    if result["batching"]:
        parts += ["", "### Batching (questions/s vs batch 1)", _table(
            ("method", "N", "layout", "decode", "batch", "q/s", "q/s batch 1", "speed-up"),
            [(r["method"], r["n"], r["layout"], r.get("decode_mode"), r["batch_size"], r["q_per_s"], r["q_per_s_batch1"],
              r["speedup"]) for r in result["batching"]])]
    if result.get("paraphrase_writing"):
        parts += ["", "### Paraphrase writing (one round of candidates; × answering = s/q ÷ all timed methods' s/q)",
                  _table(("way", "questions", "candidates/q", "batch", "few-shot sets", "s/q", "candidates/s",
                          "prefill tok/candidate", "rows/call", "gen tok/candidate", "× answering"),
                         [(r["way"], r["questions"], r["candidates_per_question"], r["batch_size"], r["formats"],
                           r["s_per_q"], round(r["candidates_per_s"], 2), round(r["prefill_tokens_per_candidate"], 1),
                           round(r["rows_per_call"], 1), round(r["generated_tokens_per_candidate"], 1),
                           r["ratio_vs_answering"]) for r in result["paraphrase_writing"]])]
    if result.get("demos"):
        parts += ["", "### Demonstrations: shared per relation vs drawn per item (bundled ParaRel)", _table(
            ("demos", "method", "items", "N", "batch", "s/item", "prefill tok/item", "prefix tok encoded",
             "distinct prefixes", "× shared"),
            [(r["demos"], r["method"], r["items"], r["n"], r["batch_size"], r["s_per_item"],
              round(r["prefill_tokens_per_item"], 1), r["prefix_tokens_encoded"], r["distinct_prefixes"],
              r["ratio_vs_shared"]) for r in result["demos"]])]
    parts += ["", "### Targets", _table(("target", "measured", "status"),
                                        [(t["target"], t["measured"], t["status"]) for t in result["targets"]])]
    return "\n".join(parts) + "\n"
