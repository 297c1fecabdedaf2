"""`info`: what this installation runs with (embedded model path, default spec, versions, data)."""

from __future__ import annotations

import json

import typer

from selfensemble.cli.common import app


@app.command("info")
def info_command(as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON.")):
    """The embedded model's GGUF path, the default model spec, versions, and where data is read from."""
    from selfensemble.about import info

    summary = info()
    if as_json:
        typer.echo(json.dumps(summary, indent=2))
        return
    emb = summary["embedded_model"]
    flex = summary["flex_defaults"]
    lines = [
        f"default model    {summary['default_model']}",
        f"embedded GGUF    {emb['path'] or 'not installed: ' + str(emb['error'])}",
        "versions         " + ", ".join(f"{k} {v or 'missing'}" for k, v in summary["versions"].items()),
        f"flex default     layout {flex['layout']}, positions {flex['positions']}, rescale "
        f"{'on' if flex['rescale'] else 'off'}, temperature {flex['temperature']}, scale {flex['scale']}",
        f"data folder      {summary['data_dir'] or 'none found (webqa/pararel read the bundled samples)'}",
    ]
    lines += [f"bundled sample   {name}: {path}" for name, path in summary["bundled_samples"].items()]
    cache = summary["model_cache"]
    size = sum(e["bytes"] for e in cache["entries"]) / 1e6
    lines.append(f"model cache      {cache['folder']} ({len(cache['entries'])} de-quantised models, {size:.0f} MB)"
                 if cache["enabled"] else "model cache      off (SELFENSEMBLE_MODEL_CACHE): every load de-quantises")
    typer.echo("\n".join(lines))
