"""The local backend: one Engine in this process (what ``selfensemble run`` has always done).

``build_engine`` is also what every Ray actor calls, so both backends load the same model with
the same settings (seed, dtype, attention, batch size) and answer alike.
"""

from __future__ import annotations

import time

from selfensemble.methods import Engine


def build_engine(cfg) -> Engine:
    """Load ``cfg.model`` and wrap it in an Engine configured from ``cfg`` (an experiment.RunConfig)."""
    from selfensemble.methods import EngineConfig
    from selfensemble.models import load_model

    return Engine(load_model(cfg.model, cfg.device, cfg.dtype, cfg.seed, device_map=cfg.device_map,
                             revision=cfg.revision, trust_remote_code=cfg.trust_remote_code),
                  EngineConfig(attention=cfg.attention, layout=cfg.layout, positions=cfg.positions,
                               rescale=cfg.rescale, fusion_temperature=cfg.fusion_temperature,
                               fusion_scale=cfg.fusion_scale, batch_size=cfg.batch_size))


def load_engine(cfg, console) -> Engine:
    """``build_engine`` with a line saying how long the load took and which attention path runs."""
    t0 = time.perf_counter()
    with console.status(f"loading {cfg.model}…"):  # the first load takes ~15-30 s
        engine = build_engine(cfg)
    console.print(f"loaded {cfg.model} in {time.perf_counter() - t0:.1f}s; attention: {engine.attention_note}")
    return engine
