"""A run's cost as the report shows it: the median over its timed batches, their spread, and the load.

Every record carries ``seconds``: its batch's wall time divided by the batch's questions, so the
records of one batch share one value (engine.Engine._decode). A run's timing samples are therefore
its batches: consecutive records with the same ``seconds``. The report gives their median and
interquartile range (a lone batch is said to be one sample), and warns when the run's sessions
saw the machine's load average above its cores (``load_average``/``cpus`` in the manifest's
sessions, written by pipeline/experiment.py): the times are then inflated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def batch_seconds(records: Sequence[dict]) -> list[float]:
    """Seconds per question of each batch, in file order (runs of equal ``seconds`` are one batch).

    Example: seconds .5, .5, .5, .7, .7, .4 → [.5, .7, .4].
    """
    out: list[float] = []
    previous = None
    for r in records:
        s = r.get("seconds")
        if s is None:
            continue
        if s != previous:
            out.append(float(s))
        previous = s
    return out


def timing_summary(records: Sequence[dict], manifest: dict) -> dict:
    """``seconds_median``, ``seconds_q1``/``seconds_q3`` (over batches), ``timing_batches``, and the
    highest load average the run's sessions recorded with their cores (``timing_load``, ``timing_cpus``)."""
    batches = batch_seconds(records)
    q1, med, q3 = (float(v) for v in np.percentile(batches, [25, 50, 75])) if batches else (None, None, None)
    loads = [(max(x for x in s["load_average"] if x is not None), s.get("cpus"))
             for s in manifest.get("sessions") or [] if any(x is not None for x in s.get("load_average") or [])]
    worst = max(loads, default=(None, None), key=lambda lc: lc[0] / (lc[1] or 1))
    return {"seconds_median": med, "seconds_q1": q1, "seconds_q3": q3, "timing_batches": len(batches),
            "timing_load": worst[0], "timing_cpus": worst[1]}


def seconds_cell(row: dict) -> str:
    """'0.52 (0.48–0.61)': the median over batches with its interquartile range; '0.52 (1 batch)' for one."""
    med = row.get("seconds_median")
    if med is None:
        s = row.get("seconds_per_item")
        return "–" if s is None else f"{s:.2f}"
    if row.get("timing_batches", 0) <= 1:
        return f"{med:.2f} (1 batch)"
    return f"{med:.2f} ({row['seconds_q1']:.2f}–{row['seconds_q3']:.2f})"


def timing_notes(rows: Sequence[dict]) -> list[str]:
    """What the report says about its s/question column: how it was measured, and busy machines."""
    if not any(r.get("seconds_median") is not None for r in rows):
        return []
    notes = ["s/question: median over the run's timed batches (interquartile range); methods ran one after "
             "another, so a busy spell in one run moves its figure; `selfensemble demo` times them interleaved."]
    busy = [f"{r.get('name', r['method'])} (load {r['timing_load']:.1f} on {r['timing_cpus']} cores)" for r in rows
            if r.get("timing_load") is not None and r.get("timing_cpus") and r["timing_load"] > r["timing_cpus"]]
    if busy:
        notes.append(f"timed while the machine's load average exceeded its cores: {', '.join(busy)}; those "
                     "seconds are inflated by other work.")
    return notes
